"""Heap trimming: freed heap goes back to the OS, and every worker of a new local cluster trims."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from annotation.cluster import worker_runtime_env
from plumbing.heap import INTERVAL_ENV, start_trimming
from tests.conftest import PROJECT_ROOT

# Frees 190 MiB of glibc heap below a chunk still in use, so that glibc cannot give
# it back from the top of the heap by itself, then polls RssAnon for up to 20 s.
FREED_BELOW_A_LIVE_CHUNK = textwrap.dedent(
    """
    import ctypes, json, sys, time
    from plumbing.heap import start_trimming

    def anon_mib():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    start = anon_mib()
    chunks = [libc.malloc(16384) for _ in range(12000)]  # below the mmap threshold
    for chunk in chunks:
        ctypes.memset(chunk, 1, 16384)
    for chunk in chunks[:-1]:
        libc.free(chunk)
    freed = anon_mib()
    started = start_trimming(float(sys.argv[1]))
    deadline = time.monotonic() + 20
    while anon_mib() > start + 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps(dict(start=start, freed=freed, end=anon_mib(), started=started)))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trimming_hands_freed_heap_below_a_live_chunk_back_to_the_os():
    out = subprocess.run(
        [sys.executable, "-c", FREED_BELOW_A_LIVE_CHUNK, "0.05"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got["started"]
    # The setup holds the memory: freed, but still resident before the trim ran.
    assert got["freed"] > got["start"] + 150, got
    assert got["end"] < got["start"] + 50, got


def test_an_interval_of_zero_or_an_unset_variable_starts_nothing(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert not start_trimming()
    assert not start_trimming(0)
    assert worker_runtime_env(verbose=True, heap_trim_s=0) == {}
    quiet = worker_runtime_env(verbose=False, heap_trim_s=0)
    assert "worker_process_setup_hook" not in quiet and INTERVAL_ENV not in quiet["env_vars"]


# A new local cluster, as jobs.annotate starts it, and one task that reports its worker.
WORKER_REPORT = textwrap.dedent(
    """
    import json, threading
    import ray
    from annotation.cluster import init_ray

    init_ray(num_cpus=1, dashboard=False, progress_bars=False, heap_trim_s=5)

    @ray.remote
    def report():
        import pyarrow as pa
        names = [t.name for t in threading.enumerate()]
        return dict(threads=names, arrow_pool=pa.default_memory_pool().backend_name)

    worker = ray.get(report.remote())
    driver = [t.name for t in threading.enumerate()]
    print(json.dumps(dict(worker=worker, driver=driver)))
    ray.shutdown()
    """
)


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_every_worker_of_a_new_local_cluster_trims_and_gives_arrow_the_same_heap():
    out = subprocess.run(
        [sys.executable, "-c", WORKER_REPORT],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "heap-trim" in got["worker"]["threads"], got
    assert got["worker"]["arrow_pool"] == "system", got
    assert "heap-trim" in got["driver"], got

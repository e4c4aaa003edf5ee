"""Helpers of the failure tests: jobs run as real processes, killed for real, compared by content."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ner import columns as C

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = pa.schema([("pmid", pa.string()), ("title", pa.string()), ("abstract", pa.string())])
# Columns that differ between two correct runs by design: when and by which run.
VOLATILE = (C.RUN_ID, C.ANNOTATED_AT)


def docs(start: int, count: int, edited: bool = False) -> list[tuple[str, str, str]]:
    word = "Ibuprofen" if edited else "Aspirin"
    return [
        (str(i), f"Title {i} on p53 and MDM2.", f"{word} inhibits COX-{i} in human T cells.")
        for i in range(start, start + count)
    ]


def write_corpus(root: Path, files: dict[str, list[tuple]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        table = pa.table([list(c) for c in zip(*rows, strict=True)], schema=SCHEMA)
        pq.write_table(table, root / name)
    return root


def content_checksum(tables: Iterable[pa.Table]) -> str:
    """sha256 of all rows, sorted, without the volatile provenance columns.

    Scores count to 4 decimals: which documents share a forward pass changes the
    float rounding of a score (by about 1e-7 on a CPU; more in bf16 on a GPU), and
    batch company depends on the order in which blocks stream, which no two runs
    need to share.
    """
    rows = []
    for table in tables:
        keep = [name for name in table.column_names if name not in VOLATILE]
        rows.extend(
            json.dumps(_rounded(row), sort_keys=True, default=str)
            for row in table.select(keep).to_pylist()
        )
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def small_batch_config(corpus: Path, output: Path, model: Path, **overrides):
    """An annotation run in batches of 10 documents and 64-token windows (8 a batch), so
    a 200-document corpus makes many batches and files for a fault to fall among."""
    from annotation.config import AnnotateConfig

    settings = dict(input=[str(corpus)], output=str(output), model=str(model),
                    id_column="pmid", text_columns=["title", "abstract"], max_length=64,
                    stride=16, tokenize_batch_size=10, classify_batch_size=10,
                    token_budget=512, write_batch_size=10, classifier_concurrency=[1, 1],
                    progress_bars=False)  # fmt: skip
    return AnnotateConfig(**(settings | overrides))


def read_output(summary) -> tuple[list, str]:
    """(sorted ids, content checksum) of a run's files."""
    tables = [pq.read_table(path) for path in summary.files]
    return doc_ids(tables), content_checksum(tables)


def doc_ids(tables: Iterable[pa.Table]) -> list:
    return sorted(
        (v for t in tables for v in t.column(C.DOC_ID).to_pylist()), key=lambda v: (v is None, v)
    )


def job_env(failpoints: str = "") -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # each job starts its own local cluster, like `make run`
    env["PYTHONPATH"] = str(ROOT)
    if failpoints:
        env["NER_FAILPOINTS"] = failpoints
    else:
        env.pop("NER_FAILPOINTS", None)
    return env


def run_job(module: str, args: list[str], failpoints: str = "", timeout: float = 240):
    """Run ``python -m module args`` in its own process group; returns (returncode, output).

    When a failpoint kills the driver, the rest of its process group (the local Ray
    cluster it started, workers in the middle of writing) is killed too, as when
    the machine or container running a job goes away, and the group is waited for
    so no process of the killed run can write after the rerun starts.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=job_env(failpoints),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc.pid)
    return proc.returncode, output


def _kill_group(pgid: int, deadline_s: float = 60) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {pgid} still alive {deadline_s}s after SIGKILL")


def shutdown_in_process_ray() -> None:
    """One Ray instance on the machine at a time, so a job's ray.init() starts its own."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def local_cluster(head: dict, nodes: list[dict]):
    """A multi-node Ray cluster on this machine, connected to: yields (cluster, worker nodes).

    ``ray.cluster_utils.Cluster`` starts each node as its own raylet with its own
    CPUs, custom resources and object store, as Ray's own tests do; removing one
    with ``allow_graceful=False`` kills its raylet and every process on it at once,
    the way a spot reclaim does.
    """
    import ray
    from ray.cluster_utils import Cluster

    shutdown_in_process_ray()
    cluster = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, **head))
    added = [cluster.add_node(**node) for node in nodes]
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, added
    finally:
        ray.shutdown()
        cluster.shutdown()


class PeakPss:
    """Peak summed PSS of this process and its descendants, sampled in a thread.

    A local Ray cluster started by ``ray.init`` runs as descendants of the driver
    (GCS, raylet, workers), and PSS shares each page among the processes that map it,
    so the sum counts the object store's shared memory once.
    """

    def __init__(self, interval_s: float = 0.5):
        import threading

        self.peak = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            # A process may exit between the listing and the read.
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += process.memory_full_info().pss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def spilled_mib() -> float:
    """MiB the running cluster has spilled from its object store so far (Ray's own count)."""
    import re

    from ray._private.internal_api import memory_summary

    found = re.search(r"Spilled (\d+) MiB", memory_summary(stats_only=True))
    return float(found.group(1)) if found else 0.0

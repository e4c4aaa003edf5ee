"""Summed PSS of a process tree, split by role, sampled once a second by default.

Read from ``/proc/PID/smaps_rollup``, the kernel's per-process summary, which also
splits PSS: anonymous memory (the process's heap) and shared memory, which for a
Ray worker is the object store's pages it has touched. A page written by one
worker counts as that worker's private memory (USS) until another maps it, so the
split, not USS, tells a growing heap from a filling object store. Reading PSS
makes the kernel walk every page of every process: at 100 ms intervals that took
more than half a core of two from the job, hence once a second by default. Long
runs use 10 s. The walks change the job's timing: before workers trimmed their heap
(``plumbing/heap.py``), the classifier actor's heap grew in every run whose
``smaps_rollup`` was read every second (BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import threading
from collections import defaultdict

import psutil

# Role of a process, by the first of these found in its command line.
ROLES = [
    ("TokenClassifierStage", "classifier actor"),
    ("TokenizeStage", "tokenize actor"),
    ("SpanDecodeStage", "decode actor"),
    ("_StatsActor", "Ray Data stats actor"),
    ("jobs.annotate", "driver"),
    ("raylet", "raylet (object store)"),
    ("gcs_server", "GCS"),
    # A Ray worker's title names the task it runs now; between tasks it is IDLE.
    ("ray::IDLE", "idle Ray workers"),
    ("ray::ReadFiles", "read tasks"),
    ("_write", "write tasks"),
    ("ray::", "other Ray workers (system actors)"),
]


def role(cmdline: str) -> str:
    return next((name for key, name in ROLES if key in cmdline), "Ray daemons (dashboard, agents)")


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, of which shared memory) in bytes, from the kernel's per-process summary."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0]] = int(parts[1]) * 1024
    return fields.get("Pss:", 0), fields.get("Pss_Shmem:", 0)


class RoleSampler:
    """Summed PSS of a process tree every ``interval`` s; keeps the by-role split at the peak."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.at_peak: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        by_role: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:  # a process may exit between the listing and the read
                pss, shmem = rollup(proc.pid)
                name = role(" ".join(proc.cmdline()))
            except (OSError, psutil.Error):
                continue
            by_role[name][0] += pss
            by_role[name][1] += shmem
            by_role[name][2] += 1
        total = sum(pss for pss, _, _ in by_role.values())
        if total > self.peak:
            self.peak, self.at_peak = total, dict(by_role)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def print_peak(sampler: RoleSampler, indent: str = "    ") -> None:
    """The processes by role at the peak, largest first: PSS, how many, of which object store."""
    mib = 2**20
    for who, (pss, shmem, n) in sorted(sampler.at_peak.items(), key=lambda kv: -kv[1][0]):
        print(
            f"{indent}{who:36s} {pss / mib:7,.0f} MiB in {n:2d}  (object store {shmem / mib:5,.0f})"
        )

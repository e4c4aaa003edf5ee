"""What a benchmark samples while a job runs: its process tree's memory and CPU, and the GPU.

One mechanism, :class:`Sampler`: a thread calls ``sample()`` every ``interval``
seconds while a ``with`` block runs. Its kinds:

- :class:`RoleSampler`: summed PSS of a process tree, split by role, once a second by
  default (``benchmarks.scale_100x``, ``benchmarks.memory_by_process``);
- :class:`PeakMemory`: the largest summed RSS and PSS of this process's tree, every
  100 ms (``benchmarks.annotate_throughput``);
- :class:`TreeCpu`: CPU-seconds of a process tree by Ray title, every 0.2 s
  (``benchmarks.host_cost``);
- :class:`GpuBusy`: mean GPU utilisation from NVML, every 100 ms (``benchmarks.gpu_suite``).

PSS is read from ``/proc/PID/smaps_rollup``, the kernel's per-process summary, which
also splits PSS: anonymous memory (the process's heap) and shared memory, which for a
Ray worker is the object store's pages it has touched. A page written by one worker
counts as that worker's private memory (USS) until another maps it, so the split, not
USS, tells a growing heap from a filling object store. Reading PSS makes the kernel
walk every page of every process: at 100 ms intervals that took more than half a core
of two from the job, hence once a second by default for :class:`RoleSampler`. Long
runs use 10 s. The walks change the job's timing: before workers trimmed their heap
(``plumbing/heap.py``), the classifier actor's heap grew in every run whose
``smaps_rollup`` was read every second (BENCHMARKS.md, "Scale").

psutil and pynvml are imported where used: the GPU suite runs on a device image
that may lack them (:class:`GpuBusy` then reports nothing).
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from pathlib import Path

# Role of a process for RoleSampler, by the first of these found in its command line.
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


class Sampler:
    """Calls :meth:`sample` every ``interval`` s on a thread while the ``with`` block runs.

    ``at_start``: also once as the block starts, before the first interval has passed.
    """

    def __init__(self, interval: float, at_start: bool = True):
        self.interval = interval
        self.at_start = at_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        if self.at_start:
            self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def process_tree(root) -> list:
    """``root`` (a ``psutil.Process``) and all its descendants; empty once it has exited."""
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


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


class RoleSampler(Sampler):
    """Summed PSS of a process tree every ``interval`` s; keeps the by-role split at the peak."""

    def __init__(self, pid: int, interval: float = 1.0):
        import psutil

        super().__init__(interval)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.at_peak: dict[str, list[int]] = {}

    def sample(self) -> None:
        import psutil

        by_role: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for proc in process_tree(self.root):
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


def print_peak(sampler: RoleSampler, indent: str = "    ") -> None:
    """The processes by role at the peak, largest first: PSS, how many, of which object store."""
    mib = 2**20
    for who, (pss, shmem, n) in sorted(sampler.at_peak.items(), key=lambda kv: -kv[1][0]):
        print(
            f"{indent}{who:36s} {pss / mib:7,.0f} MiB in {n:2d}  (object store {shmem / mib:5,.0f})"
        )


class PeakMemory(Sampler):
    """Largest summed RSS and PSS of this process tree while the block runs."""

    def __init__(self, interval: float = 0.1):
        import psutil

        super().__init__(interval)
        self.process = psutil.Process()
        self.peak_rss = self.peak_pss = 0

    def sample(self) -> None:
        rss = pss = 0
        for proc in process_tree(self.process):
            with contextlib.suppress(Exception):  # a child that just exited
                info = proc.memory_full_info()
                rss += info.rss
                pss += info.pss
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


class TreeCpu(Sampler):
    """CPU-seconds (user + system) of a process and all its descendants, polled.

    A process that ends between two polls counts with its last poll's figure.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        super().__init__(interval, at_start=False)
        self.root = psutil.Process(pid)
        self.seen: dict[tuple[int, float], float] = {}
        self.names: dict[tuple[int, float], str] = {}

    def sample(self) -> None:
        import psutil

        for process in process_tree(self.root):
            try:
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                self.seen[key] = times.user + times.system
                # Read again each time: Ray retitles a worker (ray::TokenizeStage...) once
                # it has a task, and an idle one again.
                title = ray_title(process)
                if key not in self.names or not title.startswith(("ray::IDLE", "?")):
                    self.names[key] = title
            except psutil.Error:
                continue  # ended between listing and reading: its last poll counts

    @property
    def total(self) -> float:
        return sum(self.seen.values())

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for key, seconds in self.seen.items():
            name = self.names.get(key, "?")
            roles[name] = roles.get(name, 0.0) + seconds
        return {k: round(v, 1) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}


def ray_title(process) -> str:
    """What a process of the tree is for: its Ray title, else its program and module."""
    try:
        command = process.cmdline()
    except Exception:  # psutil.Error, but psutil is imported lazily
        return "?"
    if not command:
        return process.name()
    title = command[0]
    if title.startswith("ray::"):
        return title.split(".")[0][:60]
    words = [w for w in command[1:] if not w.startswith("-")]
    name = Path(title).name
    if "python" in name and "-m" in command:
        return f"python -m {command[command.index('-m') + 1]}"
    return f"{name} {Path(words[0]).name if words else ''}".strip()[:60]


class GpuBusy(Sampler):
    """Mean GPU utilisation (NVML) while the block runs; None without a GPU or NVML."""

    def __init__(self, interval: float = 0.1):
        super().__init__(interval, at_start=False)
        self.samples: list[int] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception:  # no NVML library or no GPU: the figure is reported as absent
            self._read = None

    def sample(self) -> None:
        self.samples.append(self._read())

    def __enter__(self):
        if self._read is not None:
            super().__enter__()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

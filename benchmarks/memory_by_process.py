"""Where the annotation job's memory goes, by process, with Ray's default object store and with ours.

python -m benchmarks.memory_by_process [--documents 100000] [--store-mb 1024] [--workdir DIR]

Runs ``jobs.annotate --config configs/annotate_cpu.yaml`` twice on the same
corpus (``benchmarks.scale_100x``'s synthetic PubMed-like documents and its tiny
model biased to ``O``), each on a new local Ray cluster: once with Ray's default
object store (``object_store_mb=0``: 30% of RAM) and once with ``--store-mb``.

Memory is the summed PSS of the job's process tree, split by role
(``benchmarks.process_memory``, as in ``benchmarks.scale_100x``).

Prints, for each peer, its wall time and peak, the processes by role at the peak
(PSS, of which object store), and the ratios between the peers.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.host_cost import biased_model
from benchmarks.process_memory import RoleSampler, print_peak
from benchmarks.scale_100x import exactly_once, write_corpus

ROOT = Path(__file__).resolve().parents[1]


def run(corpus: Path, output: Path, model: Path, store_mb: int) -> tuple[float, RoleSampler]:
    command = [
        sys.executable, "-m", "jobs.annotate", "--config", "configs/annotate_cpu.yaml",
        f"input={corpus}", f"output={output}", f"model={model}", "progress_bars=false",
        f"object_store_mb={store_mb}",
    ]  # fmt: skip
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with RoleSampler(job.pid) as sampler:
        console = job.communicate()[0].decode()
    wall = time.perf_counter() - started
    if job.returncode != 0:
        raise SystemExit(f"jobs.annotate failed ({job.returncode}):\n{console}")
    exactly_once(corpus, output)
    shutil.rmtree(output)
    return wall, sampler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_by_process", description=__doc__
    )
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--store-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="memory-"))
    mib = 2**20
    try:
        model = biased_model(root / "model", entity_share=0.10)
        corpus = write_corpus(root / "corpus", args.documents)
        peers = {}
        for name, store in [
            ("Ray's default store", 0),
            (f"{args.store_mb} MiB store", args.store_mb),
        ]:
            wall, sampler = run(corpus, root / "out", model, store)
            peers[name] = (wall, sampler.peak)
            print(f"{name}: {args.documents:,} documents in {wall:.1f} s, each id once; "
                  f"peak summed PSS {sampler.peak / mib:,.0f} MiB, by role at the peak:")  # fmt: skip
            print_peak(sampler)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    (base_wall, base_peak), (ours_wall, ours_peak) = peers.values()
    print(f"ratios, {args.store_mb} MiB store / default: time {ours_wall / base_wall:.2f}x, "
          f"peak summed PSS {ours_peak / base_peak:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

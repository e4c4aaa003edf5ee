"""Where the annotation job's memory goes, by process, with Ray's default object store and with ours.

python -m benchmarks.memory_by_process [--documents 100000] [--store-mb 1024] [--workdir DIR]

Runs ``jobs.annotate --config configs/annotate_cpu.yaml`` twice on the same
corpus (``benchmarks.scale_100x``'s synthetic PubMed-like documents and its tiny
model biased to ``O``), each on a new local Ray cluster: once with Ray's default
object store (``object_store_mb=0``: 30% of RAM) and once with ``--store-mb``.

Memory is the summed PSS of the job's process tree, split by role
(``benchmarks.process_sampling``, as in ``benchmarks.scale_100x``).

Prints, for each peer, its wall time and peak, the processes by role at the peak
(PSS, of which object store), and the ratios between the peers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.host_cost import biased_model
from benchmarks.process_sampling import print_peak
from benchmarks.scale_100x import exactly_once, run_job, write_corpus


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
            output = root / "out"
            wall, sampler, _ = run_job(
                corpus, output, model, overrides=[f"object_store_mb={store}"]
            )
            exactly_once(corpus, output)
            shutil.rmtree(output)
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

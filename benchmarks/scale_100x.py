"""Scale: the annotation job on N and on 100 x N synthetic PubMed-like documents.

python -m benchmarks.scale_100x [--documents 10000] [--factor 100] [--interval 10] [--workdir DIR]

A tiny BERT (two layers of width 32, the embedded MiniLM tokenizer), so that the
pipeline is measured, not the forward pass, with its ``O`` bias set so that about 10%
of tokens are entities, as with a trained model (``benchmarks.host_cost.biased_model``;
a random head tags most tokens, and decoding and writing would be measured at ten
times their real share).
Documents are drawn with replacement from the 500 sample abstracts, so titles and
abstracts follow the sample's length distribution; each gets a distinct id. Files
hold 10,000 documents each, like a converted PubMed file of that size.

Each size runs ``python -m jobs.annotate`` (configs/annotate_cpu.yaml) in a child
process, so the figure includes Ray's start-up as a user pays it. Memory is the
peak of the summed PSS of that process and all its descendants (the local Ray
cluster it starts: GCS, raylet, workers), sampled every 10 s by default
(``benchmarks.process_sampling``, which says why not every second); PSS counts a
page shared by several processes (the object store) once, where summed RSS counts
it in each. The processes at the peak
are printed by role, with the object-store share of each. The sampler's own CPU
time is printed too: reading PSS makes the kernel walk each process's pages.
After each run, the output's ids are checked against the input's: every id once,
none missing, none twice.

Prints each size's wall time, peak PSS and rows, and the ratios, against the
issue's targets: time at most 1.05 x factor, memory at most 1.2x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.annotate_throughput import PUBTATOR
from benchmarks.host_cost import biased_model
from benchmarks.process_sampling import RoleSampler, print_peak
from corpora.pubtator import read_pubtator

ROOT = Path(__file__).resolve().parents[1]
FILE_ROWS = 10_000


def write_corpus(directory: Path, documents: int, seed: int = 0) -> Path:
    """``documents`` rows (pmid, title, abstract) drawn from the sample, in files of 10,000."""
    sample = read_pubtator(PUBTATOR)
    titles = pa.array([d["title"] for d in sample])
    abstracts = pa.array([d["abstract"] for d in sample])
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, documents, FILE_ROWS)):
        n = min(FILE_ROWS, documents - start)
        pick = pa.array(rng.integers(0, len(sample), n))
        ids = pc.cast(pa.array(np.arange(start, start + n) + 40_000_000), pa.string())
        table = pa.table(
            {"pmid": ids, "title": pc.take(titles, pick), "abstract": pc.take(abstracts, pick)}
        )
        # No dictionary encoding: drawn from 500 abstracts, a file's text would shrink to
        # a 500-entry dictionary, and Ray Data, which packs files into read tasks by the
        # uncompressed size in their footers, would give one task ten files where real
        # PubMed text (no two abstracts alike) gets one: that task read 100,000
        # documents ahead of the model and held them.
        pq.write_table(table, directory / f"part-{part:05d}.parquet", use_dictionary=False)
    return directory


def run_job(
    corpus: Path, output: Path, model: Path, interval: float = 1.0, overrides: tuple = ()
) -> tuple[float, RoleSampler, str]:
    """(wall seconds, the memory sampler, console) of one ``jobs.annotate`` run."""
    command = [
        sys.executable, "-m", "jobs.annotate", "--config", "configs/annotate_cpu.yaml",
        f"input={corpus}", f"output={output}", f"model={model}", "progress_bars=false",
        *overrides,
    ]  # fmt: skip
    sampler_cpu = time.process_time()
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with RoleSampler(job.pid, interval) as memory:
        console = job.communicate()[0].decode()
    wall = time.perf_counter() - started
    print(f"    (the memory sampler used {time.process_time() - sampler_cpu:.1f} CPU s)")
    if job.returncode != 0:
        raise SystemExit(f"jobs.annotate failed ({job.returncode}):\n{console}")
    return wall, memory, console


def exactly_once(corpus: Path, output: Path) -> tuple[int, int]:
    """(rows out, rejected) after checking that the output holds each input id once."""
    manifest = json.loads((output / "_manifest.json").read_text())
    files = manifest["files"] + manifest["rejected_files"]
    got = pa.chunked_array(
        [pq.read_table(f, columns=["doc_id"]).column("doc_id") for f in files]
    ).combine_chunks()
    expected = pq.read_table(corpus, columns=["pmid"]).column("pmid").combine_chunks()
    if len(got) != len(expected) or pc.count_distinct(got).as_py() != len(got):
        raise SystemExit(f"output holds {len(got):,} rows for {len(expected):,} input ids")
    if not pc.all(pc.is_in(expected, value_set=got)).as_py():
        raise SystemExit("some input ids are missing from the output")
    return manifest["summary"]["rows_out"], manifest["summary"]["rows_rejected"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_100x", description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--factor", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between memory samples"
    )
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="scale-"))
    model = biased_model(root / "model", entity_share=0.10)
    results = {}
    try:
        for n in (args.documents, args.documents * args.factor):
            corpus = write_corpus(root / f"corpus-{n}", n)
            output = root / f"out-{n}"
            wall, memory, console = run_job(corpus, output, model, args.interval)
            rows, rejected = exactly_once(corpus, output)
            results[n] = (wall, memory.peak)
            print(
                f"{n:>10,} documents: {wall:8.1f} s, peak summed PSS "
                f"{memory.peak / 2**20:7,.0f} MiB, rows out {rows:,}, rejected {rejected:,}, "
                "each id once; at the peak:",
                flush=True,
            )
            print_peak(memory)
            print("\n".join("    " + line for line in console.strip().splitlines()[-6:]))
            shutil.rmtree(output)
            shutil.rmtree(corpus)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    (small_wall, small_pss), (big_wall, big_pss) = results.values()
    print(
        f"ratios at {args.factor}x documents: time {big_wall / small_wall:.2f}x "
        f"(target at most {1.05 * args.factor:g}x), peak PSS {big_pss / small_pss:.2f}x "
        "(target at most 1.2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

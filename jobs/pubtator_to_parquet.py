"""Convert a PubTator file (title and abstract lines per PMID) into Parquet for annotation.

python -m jobs.pubtator_to_parquet PUBTATOR_FILE OUT_DIR [--files N] [--copies K]

Writes columns ``pmid`` (string), ``title``, ``abstract`` into ``N`` files (the
documents split evenly). ``--copies K`` repeats the corpus K times with pmids
suffixed ``-1`` .. ``-K``, for throughput benchmarks on a larger corpus with unique ids.
Gold mention lines are ignored.
"""

from __future__ import annotations

import argparse
import sys

from corpora.pubtator import read_pubtator, write_parquet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.pubtator_to_parquet", description=__doc__)
    parser.add_argument("pubtator")
    parser.add_argument("out_dir")
    parser.add_argument("--files", type=int, default=1, help="number of Parquet files")
    parser.add_argument("--copies", type=int, default=1, help="repeat the corpus this many times")
    args = parser.parse_args(argv)
    documents = read_pubtator(args.pubtator)
    paths = write_parquet(documents, args.out_dir, args.files, args.copies)
    print(f"{len(documents) * args.copies:,} documents -> {len(paths)} file(s) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

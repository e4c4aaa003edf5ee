"""Build the CRAFT training dataset (original + augmented train, devel, test) as Parquet.

python -m jobs.build_dataset [--data-dir DIR] [--out DIR] [--seed 42] [--rate 0.2]
                             [--lexicon Cell=cells.txt ...]
"""

from __future__ import annotations

import argparse
import sys

from training.augment import DEFAULT_RATE
from training.dataset import build_dataset, format_stats, write_dataset

DEFAULT_OUT = "outputs/dataset"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.build_dataset", description=__doc__)
    parser.add_argument("--data-dir", help="folder with train.tsv, devel.tsv[, test.tsv]")
    parser.add_argument("--ontology-dir", help="folder with CL.obo and SO.obo")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="share of mentions replaced"
    )
    parser.add_argument("--no-augment", action="store_true", help="skip the augmented copy")
    parser.add_argument(
        "--lexicon",
        action="append",
        default=[],
        metavar="TYPE=FILE",
        help="replace a type's lexicon with a file of surface forms, one a line (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        args.lexicon = dict(item.split("=", 1) for item in args.lexicon)
    except ValueError:
        parser.error("--lexicon takes TYPE=FILE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import datasets

    datasets.disable_progress_bars()  # one bar per split file says nothing the stats don't
    build = build_dataset(
        data_dir=args.data_dir,
        ontology_dir=args.ontology_dir,
        lexicon_files=args.lexicon,
        rate=args.rate,
        seed=args.seed,
        augment_train=not args.no_augment,
    )
    paths = write_dataset(build, args.out)
    print(format_stats(build.stats))
    for name, path in paths.items():
        print(f"{name}: {len(build.dataset[name]):,} sentences -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

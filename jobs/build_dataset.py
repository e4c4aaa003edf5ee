"""Build the CRAFT training dataset (original + augmented train, devel, test) as Parquet.

python -m jobs.build_dataset [--config FILE] [data_dir=DIR] [out=DIR] [seed=42] [rate=0.2]
                             [augment=false] [lexicon.Cell=cells.txt ...]
"""

from __future__ import annotations

import sys

from plumbing.config import job_main
from training.config import BuildDatasetConfig
from training.dataset import build_dataset, format_stats, write_dataset


@job_main(BuildDatasetConfig)
def main(config: BuildDatasetConfig) -> int:
    import datasets

    datasets.disable_progress_bars()  # one bar per split file says nothing the stats don't
    build = build_dataset(
        data_dir=config.data_dir,
        ontology_dir=config.ontology_dir,
        lexicon_files=config.lexicon,
        rate=config.rate,
        seed=config.seed,
        augment_train=config.augment,
    )
    paths = write_dataset(build, config.out)
    print(format_stats(build.stats))
    for name, path in paths.items():
        print(f"{name}: {len(build.dataset[name]):,} sentences -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

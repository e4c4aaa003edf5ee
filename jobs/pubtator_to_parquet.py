"""Convert a PubTator file (title and abstract lines per PMID) into Parquet for annotation.

python -m jobs.pubtator_to_parquet pubtator=PUBTATOR_FILE out_dir=OUT_DIR [files=N] [copies=K]

Writes columns ``pmid`` (string), ``title``, ``abstract`` into ``N`` files (the
documents split evenly). ``copies=K`` repeats the corpus K times with pmids
suffixed ``-1`` .. ``-K``, for throughput benchmarks on a larger corpus with unique ids.
Gold mention lines are ignored.
"""

from __future__ import annotations

import sys

from corpora.pubtator import PubtatorToParquetConfig, read_pubtator, write_parquet
from plumbing.config import job_main


@job_main(PubtatorToParquetConfig)
def main(config: PubtatorToParquetConfig) -> int:
    documents = read_pubtator(config.pubtator)
    paths = write_parquet(documents, config.out_dir, config.files, config.copies)
    print(
        f"{len(documents) * config.copies:,} documents -> {len(paths)} file(s) in {config.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

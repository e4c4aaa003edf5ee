"""Convert PubMed/MEDLINE XML files (.xml, .xml.gz) into Parquet citations for annotation.

python -m jobs.pubmed_to_parquet input=DIR_OR_FILES output=DIR [key=value ...]

One Ray Data task per file streams it (memory flat on a 30,000-record file) and
writes ``citations/<stem>.parquet`` (pmid, version, title, abstract, language,
journal, pub_year, date_revised, source_file, record_index) and
``deletions/<stem>.parquet`` (the file's DeleteCitation PMIDs); ``_report.json``,
written last, has the counts per file and the bad files with their reasons. A
malformed or truncated file is reported by name and the other files go on; the
exit code is then 1. Annotate the result with
``python -m jobs.annotate input=DIR/citations id_column=pmid text_columns=[title,abstract]``.
"""

from __future__ import annotations

import sys

from annotation.pubmed import PubmedToParquetConfig, run_pubmed_to_parquet
from corpora.corpus import InputError
from plumbing.config import ConfigError, job_main


@job_main(PubmedToParquetConfig, errors=(ConfigError, InputError))
def main(config: PubmedToParquetConfig) -> int:
    summary = run_pubmed_to_parquet(config)
    print(summary.format())
    if summary.bad_files:
        print(f"error: {len(summary.bad_files)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

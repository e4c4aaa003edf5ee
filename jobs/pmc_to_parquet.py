"""Convert PMC JATS full texts (.nxml, or .tar.gz OA packages of them) into Parquet articles.

python -m jobs.pmc_to_parquet input=DIR_OR_FILES output=DIR [keep=[references]] [key=value ...]

One Ray Data task per file or archive streams it (an archive member by member)
and writes ``articles/<stem>.parquet``: one row per article (pmcid, pmid, doi,
title, license, year, text, passages, source_file, source_member, content_hash),
``passages`` being ``(section_type, title, start, end)`` over ``text`` in
BioC-PMC's section types (TITLE, ABSTRACT, INTRO, METHODS, RESULTS, DISCUSS,
CONCL, FIG, TABLE, SUPPL...). References, formulas and footnotes are left out
unless named in ``keep``. ``_report.json``, written last, has the counts per
file and the bad files and bad articles with their reasons. A file that cannot
be read, or an article inside an archive that cannot, is reported by name and
the rest goes on; the exit code is then 1. Annotate the result with
``python -m jobs.annotate input=DIR/articles id_column=pmcid text_columns=[text]
passages_column=passages`` (each entity then names its passage's section).
"""

from __future__ import annotations

import sys

from annotation.pmc import PmcToParquetConfig, run_pmc_to_parquet
from corpora.corpus import InputError
from plumbing.config import ConfigError, job_main


@job_main(PmcToParquetConfig, errors=(ConfigError, InputError))
def main(config: PmcToParquetConfig) -> int:
    summary = run_pmc_to_parquet(config)
    print(summary.format())
    bad_files, bad_articles = len(summary.bad_files), len(summary.bad_articles)
    if bad_files or bad_articles:
        print(
            f"error: {bad_files} file(s) and {bad_articles} article(s) could not be read",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

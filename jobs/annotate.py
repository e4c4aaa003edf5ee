"""Annotate a Parquet corpus with entity spans, streaming on Ray Data.

python -m jobs.annotate --config configs/annotate_cpu.yaml input=DIR_OR_URI output=DIR [key=value ...]

Reads the input files' footers first (fails on a missing file, column or unreadable
file before any model work), then streams: read Parquet (projected columns) ->
TokenizeStage (CPU actors) -> TokenClassifierStage (actor pool, GPUs when present)
-> SpanDecodeStage, then abbreviation resolution (CPU actors) -> ParquetShardWriter. Prints a summary
and checks rows_in == rows_out + rows_rejected; the manifest ``_manifest.json`` is
written last. Rerunning an interrupted run with its run_id skips what it wrote.
``verbose=true`` shows Ray's own log lines; they are always in the logs folder printed.
"""

from __future__ import annotations

import sys

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from corpora.corpus import InputError
from plumbing.config import ConfigError, job_main


@job_main(AnnotateConfig, errors=(ConfigError, InputError, FileNotFoundError))
def main(config: AnnotateConfig) -> int:
    summary = run_annotate(config)
    print(summary.format())
    if not summary.balanced:
        print("error: rows_in != rows_out + rows_rejected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Incremental reprocessing into a Delta Lake table, one commit per run; fit for cron.

python -m jobs.reprocess --config configs/reprocess_cpu.yaml input=DIR_OR_URI store=DIR_OR_S3_URI [key=value ...]

Annotates only the documents that are new, edited, or annotated by another model
or other settings, and commits their rows (and the deletion of documents gone from
the corpus) to the store's table in one transaction: one table version per run
(:mod:`annotation.reprocess`; the table in :mod:`annotation.store`). It prints the
plan first; ``plan_only=true`` stops there (no Ray, no model, no commit).

A run that crashes commits nothing, so readers keep seeing the previous version.
Rerun with the same run_id (or with none: the newest crashed run is resumed) and
the documents it already wrote are skipped. With nothing to do, no model is loaded
and Ray is not started. Of two runs that overlap, the one whose table changed
under it (the other committed first) commits nothing and exits 3.

Exit codes: 0 committed (or nothing to commit, or plan only); 1 a check failed
(nothing committed); 2 bad input or config (an old snapshot store included);
3 another run committed first, or the run_id asked for is in progress elsewhere.
"""

from __future__ import annotations

import sys

from annotation.commit import ConcurrentCommitError
from annotation.config import ReprocessConfig
from annotation.reprocess import ReprocessError, run_reprocess
from annotation.staging import RunInProgressError
from corpora.corpus import InputError
from plumbing.config import ConfigError, job_main


@job_main(ReprocessConfig, errors=(ConfigError, InputError, FileNotFoundError))
def main(config: ReprocessConfig) -> int:
    try:
        summary = run_reprocess(config)
    except (ConcurrentCommitError, RunInProgressError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ReprocessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

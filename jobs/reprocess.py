"""Incremental reprocessing into an annotation store, published atomically; fit for cron.

python -m jobs.reprocess --config configs/reprocess_cpu.yaml input=DIR_OR_URI store=DIR [key=value ...]

Annotates only the documents that are new, edited, or annotated by another model
or other settings, carries the other rows over unchanged, and publishes a new
snapshot by writing ``manifests/<snapshot_id>.json`` last (:mod:`annotation.reprocess`,
store layout in :mod:`annotation.snapshots`).

A run that crashes leaves no manifest, so readers keep seeing the previous
snapshot. Rerun with the same run_id (or with none: the newest crashed run is
resumed) and the documents it already wrote are skipped. With nothing to do,
no model is loaded and Ray is not started. One run at a time per store (flock).

Exit codes: 0 published; 1 a check failed (nothing published); 2 bad input or
config; 3 another run holds the store.
"""

from __future__ import annotations

import sys

from annotation.config import ReprocessConfig
from annotation.reprocess import ReprocessError, run_reprocess
from annotation.snapshots import StoreLockedError
from ner.config import ConfigError, parse_job_args
from ner.corpus import InputError


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_job_args(ReprocessConfig, argv, "python -m jobs.reprocess", __doc__)
        summary = run_reprocess(config)
    except StoreLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ReprocessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ConfigError, InputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Incremental reprocessing: plan what changed, annotate it, commit it to the Delta table.

Compares the corpus with the store's table (:mod:`annotation.store`; only the
columns ``doc_id, content_hash, model_fingerprint, settings_fingerprint`` are read)
and annotates only the documents that are new, whose text changed (content hash of
the text columns), or whose rows came from another model or other annotation
settings. The to-do documents are staged as Parquet and annotated by
:func:`annotation.run.run_annotate` into the run's staging folder
(:mod:`annotation.staging`), so a crashed run resumes where it stopped. The run's
rows, and the deletion of documents gone from the corpus, then reach the table in
one commit: one new table version per run. The other rows are untouched (same
run_id and annotated_at).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from annotation import planning as P
from annotation import staging as S
from annotation import store
from annotation.config import CONTENT_HASH, ROW_SETTINGS, ReprocessConfig
from annotation.hashing import settings_fingerprint
from annotation.run import RunSummary, prepare_run, run_annotate
from ner import columns as C
from ner.failpoints import failpoint
from ner.pubmed_updates import load_current

COUNTS = (
    "documents",
    "new",
    "changed",
    "model_changed",
    "carried",
    "deleted",
    "annotated",
    "resumed",
    "null_ids",
    "duplicate_ids",
)


class ReprocessError(RuntimeError):
    """A check before the commit failed; nothing was committed."""


@dataclass
class ReprocessSummary:
    """What one run did; printed, and stored in the commit's metadata."""

    run_id: str
    previous_version: int | None = None  # the table version the run planned against
    version: int | None = None  # the version it committed (the previous one if no change)
    documents: int = 0  # distinct non-null ids in the corpus
    null_ids: int = 0
    duplicate_ids: int = 0  # repeats of an id with the same text (annotated once)
    new: int = 0
    changed: int = 0
    model_changed: int = 0
    carried: int = 0
    deleted: int = 0
    annotated: int = 0  # documents sent to the model by this invocation
    resumed: int = 0  # documents an earlier attempt of this run already wrote
    rows: int = 0  # rows written by the commit (annotated and rejected)
    rejected_rows: int = 0
    expired_files: int = 0
    plan_only: bool = False
    reason: str = ""  # why everything was re-annotated, if it was
    pubmed_state: str = ""  # pubmed=true: what the files resolved to; PubMed's words
    wall_s: float = 0.0
    annotate: RunSummary | None = field(default=None, repr=False)

    def counts(self) -> str:
        n = (self.new, self.changed, self.model_changed, self.carried, self.deleted)
        if self.pubmed_state:  # the same counts in PubMed's words
            text = "new {0:,}, revised {1:,}, deleted {4:,}, unchanged {3:,}, model-changed {2:,}"
        else:
            text = "new {0:,}, changed {1:,}, model_changed {2:,}, carried {3:,}, deleted {4:,}"
        text = text.format(*n) + f", annotated {self.annotated:,}"
        return text + (f", resumed {self.resumed:,}" if self.resumed else "")

    def format(self) -> str:
        previous = "none" if self.previous_version is None else self.previous_version
        if self.plan_only:
            head = f"plan only (table version {previous}); nothing annotated or committed"
        elif self.version == self.previous_version:
            head = f"run {self.run_id}: no change; table stays at version {previous}"
        else:
            head = f"run {self.run_id} committed table version {self.version} (previous {previous})"
        lines = [head, *([self.pubmed_state] if self.pubmed_state else []), self.counts()]
        if not self.plan_only:
            lines.append(
                f"rows written {self.rows:,} (rejected {self.rejected_rows:,}); "
                f"{self.expired_files:,} expired file(s) vacuumed; wall {self.wall_s:.1f} s"
            )
        if self.reason:
            lines.insert(2, f"all documents re-annotated: {self.reason}")
        if self.null_ids or self.duplicate_ids:
            lines.append(
                f"WARNING: {self.null_ids:,} row(s) without an id skipped; "
                f"{self.duplicate_ids:,} repeated id(s) with identical text annotated once"
            )
        return "\n".join(lines)


def _staging_dir(config: ReprocessConfig) -> Path:
    if config.staging:
        return Path(config.staging).expanduser().resolve()
    return Path(store.table_uri(config.store)) / "_staging"


def run_reprocess(
    config: ReprocessConfig, *, after_file: Callable[[str], None] | None = None
) -> ReprocessSummary:
    """Plan, annotate what changed, commit it as one table version, expire old versions.

    ``after_file`` is called with each file the annotation pipeline writes (tests
    raise from it to simulate a crash part-way through a run).
    """
    started = time.perf_counter()
    store.refuse_old_format(config.store)
    staging = _staging_dir(config)
    current = load_current(config.input) if config.pubmed else None  # PubMed's current state
    described = current.describe() if current else ""
    prepared = prepare_run(
        replace(config, input=current.files) if current else config, str(staging)
    )
    fingerprint = prepared.fingerprint
    settings = {name: getattr(config, name) for name in ROW_SETTINGS}
    settings_fp = settings_fingerprint(settings)
    options = config.storage_options or None

    if config.plan_only:  # read-only: no lock, no staging, no Ray, no model
        table = store.open_table(config.store, options)
        previous = P.load_previous(store.read_state(table), fingerprint, settings_fp)
        summary = ReprocessSummary(
            run_id="", previous_version=table.version() if table else None, plan_only=True
        )
        summary.reason, summary.pubmed_state = previous.reason, described
        plan = P.plan_run(
            config, prepared.filesystem, prepared.files, previous, P.empty_done(), None,
            summary, current,
        )  # fmt: skip
        summary.annotated = plan.needed.num_rows
        _print_plan(config, summary, len(prepared.files), "plan")
        summary.wall_s = time.perf_counter() - started
        return summary

    with S.StoreLock(staging):
        table = store.open_table(config.store, options)
        run_id, resuming = S.choose_run_id(staging, config.run_id, store.committed_runs(table))
        previous = P.load_previous(store.read_state(table), fingerprint, settings_fp)
        summary = ReprocessSummary(
            run_id=run_id, previous_version=table.version() if table else None
        )
        summary.reason, summary.pubmed_state = previous.reason, described
        todo_dir = S.open_run(staging, run_id, fingerprint, settings_fp)
        out_dir = staging / run_id / S.OUT
        done = S.already_written(out_dir)
        plan = P.plan_run(
            config, prepared.filesystem, prepared.files, previous, done, todo_dir, summary, current
        )
        summary.annotated, summary.resumed = plan.todo_rows, plan.resumed
        _print_plan(config, summary, len(prepared.files), "resuming" if resuming else "run")
        failpoint("reprocess.before_annotate")
        if plan.todo_rows:
            on_stats = None
            if after_file is not None:

                def on_stats(row: dict) -> None:
                    for name in (row["file"], row["rejected_file"]):
                        if name:
                            after_file(name)

            summary.annotate = run_annotate(
                config.annotate_config([str(todo_dir)], str(out_dir), run_id),
                rejected_columns=[CONTENT_HASH],
                on_stats=on_stats,
                # The plan above already left out what an earlier attempt wrote, by
                # doc_id; the staging file's rows differ, so row hashes cannot match.
                resume=False,
            )
            print(summary.annotate.format(), flush=True)
            if not summary.annotate.balanced:
                raise ReprocessError("annotation rows_in != rows_out + rows_rejected")
        rows = _run_rows(config, out_dir, plan.needed, fingerprint, settings_fp)
        deleted = plan.deleted
        summary.rows = rows.num_rows if rows is not None else 0
        if rows is not None:
            rejected = pc.equal(rows[C.STATUS], C.STATUS_REJECTED)
            summary.rejected_rows = pc.sum(rejected).as_py() or 0
        failpoint("reprocess.before_commit")  # every row staged, nothing committed
        if rows is None and not deleted:
            summary.version = summary.previous_version
        else:
            if rows is None:
                rows = pa.table({C.DOC_ID: pa.array([], pa.string())})
            metadata = {
                store.RUN_KEY: run_id,
                store.COUNTS_KEY: json.dumps({name: getattr(summary, name) for name in COUNTS}),
                "model_name": config.model,
                "model_fingerprint": fingerprint,
                "settings": json.dumps(settings, sort_keys=True, default=str),
            }
            summary.version = store.commit(
                config.store,
                table,
                rows,
                deleted,
                replace_all=table is not None and not plan.carried,
                metadata=metadata,
                storage_options=options,
                target_file_mb=config.target_file_mb,
            )
            summary.expired_files = len(store.expire(config.store, config.keep_versions, options))
        S.finish(staging, run_id)
    summary.wall_s = time.perf_counter() - started
    return summary


def _print_plan(config: ReprocessConfig, summary: ReprocessSummary, files: int, verb: str) -> None:
    previous = "none" if summary.previous_version is None else summary.previous_version
    print(
        f"{verb} {summary.run_id} on {config.store} (table version {previous}); "
        f"{summary.documents:,} documents in {files:,} file(s)\n"
        + (f"{summary.pubmed_state}\n" if summary.pubmed_state else "")
        + f"{summary.annotated:,} to annotate: {summary.counts()}",
        flush=True,
    )


def _run_rows(
    config: ReprocessConfig,
    out_dir: Path,
    needed: pa.Table,
    fingerprint: str,
    settings_fp: str,
) -> pa.Table | None:
    """The run's rows for the table, checked: every needed document exactly once."""
    annotated, rejected = S.read_needed(out_dir, needed)
    if annotated is None and rejected is None:
        if needed.num_rows:
            raise ReprocessError(
                f"{needed.num_rows:,} document(s) were not annotated; nothing committed"
            )
        return None
    parts = [t[C.DOC_ID] for t in (annotated, rejected) if t is not None]
    ids = pa.chunked_array([c for part in parts for c in part.chunks], pa.string())
    missing = needed[C.DOC_ID].filter(pc.invert(pc.is_in(needed[C.DOC_ID], ids.combine_chunks())))
    if len(missing):
        raise ReprocessError(
            f"{len(missing):,} document(s) missing from the run's output "
            f"(e.g. {sorted(missing.to_pylist())[:3]}); nothing committed"
        )
    settings = pa.array([settings_fp], pa.string())
    parts = [
        t.append_column(store.SETTINGS_FINGERPRINT, pa.repeat(settings[0], t.num_rows))
        if t is not None
        else None
        for t in (annotated, rejected)
    ]
    return store.table_rows(parts[0], parts[1], config.model, fingerprint)

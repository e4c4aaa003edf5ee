"""Incremental reprocessing: plan what changed, annotate it, commit it to the Delta table.

Compares the corpus with the store's table (:mod:`annotation.store`; only the
columns ``doc_id, content_hash, model_fingerprint, settings_fingerprint`` are read)
and annotates only the documents that are new, whose text changed (content hash of
the text columns), or whose rows came from another model or other annotation
settings. The to-do documents are staged as Parquet in the run's staging area, on
the store's filesystem (:mod:`annotation.staging`), and annotated by
:func:`annotation.run.run_annotate`, whose workers write the table's rows there
(:mod:`annotation.store_writer`), so a crashed run resumes where it stopped. The
run's files, and the deletion of documents gone from the corpus, then reach the
table in one commit (:mod:`annotation.commit`): one new table version per run. The
other rows are untouched (same run_id and annotated_at).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from annotation import planning as P
from annotation import staging as S
from annotation import store
from annotation.commit import ConcurrentCommitError, commit, commit_files
from annotation.config import ROW_SETTINGS, ReprocessConfig
from annotation.hashing import settings_fingerprint
from annotation.run import PreparedRun, RunSummary, prepare_run, run_annotate
from annotation.store_writer import StoreShardWriter
from corpora.pubmed_updates import CurrentState, load_current
from ner import columns as C
from plumbing.config import ConfigError
from plumbing.failpoints import failpoint

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


def open_staging(config: ReprocessConfig) -> S.Staging:
    """The run's staging area: ``staging`` if set, else ``<store>/_staging``, on the store's filesystem."""
    options = config_options(config)
    fs, root = store.filesystem(config.store, options)
    if not config.staging:
        return S.Staging(fs, f"{root}/_staging", f"{store.table_uri(config.store)}/_staging")
    staging_fs, staging_root = store.filesystem(config.staging, options)
    if type(staging_fs) is not type(fs):
        raise ConfigError(
            f"staging {config.staging} must be on the store's filesystem ({config.store}): "
            "the run's files move from one to the other at the commit"
        )
    return S.Staging(staging_fs, staging_root, store.table_uri(config.staging))


def run_reprocess(
    config: ReprocessConfig, *, after_file: Callable[[str], None] | None = None
) -> ReprocessSummary:
    """Plan, annotate what changed, commit it as one table version, expire old versions.

    ``after_file`` is called with each file the annotation pipeline writes (tests
    raise from it to simulate a crash part-way through a run).
    """
    started = time.perf_counter()
    store.refuse_old_format(config.store)
    staging = open_staging(config)
    current = load_current(config.input) if config.pubmed else None  # PubMed's current state
    described = current.describe() if current else ""
    prepared = prepare_run(
        config.model_copy(update={"input": current.files}) if current else config, staging.location
    )
    fingerprint = prepared.fingerprint
    settings = {name: getattr(config, name) for name in ROW_SETTINGS}
    settings_fp = settings_fingerprint(settings)
    table = store.open_table(config.store, config_options(config))
    previous = P.load_previous(store.read_state(table), fingerprint, settings_fp)
    run_id, resuming = "", False
    if not config.plan_only:
        run_id, resuming = staging.choose_run_id(config.run_id, store.committed_runs(table))
    summary = ReprocessSummary(run_id=run_id, previous_version=table.version() if table else None)
    summary.reason, summary.pubmed_state = previous.reason, described
    plan = P.classify(config, prepared.filesystem, prepared.files, previous, summary, current)
    if config.plan_only:  # read-only: no staging, no Ray, no model
        summary.plan_only, summary.annotated = True, plan.needed.num_rows
        _print_plan(config, summary, len(prepared.files), "plan")
        summary.wall_s = time.perf_counter() - started
        return summary

    todo_dir = staging.open_run(run_id, fingerprint, settings_fp)
    run = _Run(
        config, staging, run_id, resuming, prepared, plan, table, settings, settings_fp, current
    )
    with S.Heartbeat(staging, run_id):
        _stage_annotate_commit(run, todo_dir, summary, after_file)
    summary.wall_s = time.perf_counter() - started
    return summary


@dataclass
class _Run:
    """What a run decided before its work starts."""

    config: ReprocessConfig
    staging: S.Staging
    run_id: str
    resuming: bool
    prepared: PreparedRun
    plan: P.Plan
    table: DeltaTable | None  # the version planned against
    settings: dict
    settings_fp: str
    current: CurrentState | None


def _stage_annotate_commit(run: _Run, todo_dir: str, summary: ReprocessSummary, after_file):
    config, staging, plan, options = run.config, run.staging, run.plan, config_options(run.config)
    done = staging.keep_needed(run.run_id, staging.already_written(run.run_id), plan.needed)
    P.stage(
        config, run.prepared.filesystem, run.prepared.files, plan, done, todo_dir, run.current,
        staging.fs,
    )  # fmt: skip
    summary.annotated, summary.resumed = plan.todo_rows, plan.resumed
    _print_plan(config, summary, len(run.prepared.files), "resuming" if run.resuming else "run")
    failpoint("reprocess.before_annotate")
    if plan.todo_rows:
        _annotate(run, todo_dir, summary, after_file)
    files = staging.written(run.run_id)
    summary.rows, summary.rejected_rows = _check_files(staging, files, plan.needed)
    failpoint("reprocess.before_commit")  # every row staged, nothing committed
    metadata = {
        store.RUN_KEY: run.run_id,
        store.COUNTS_KEY: json.dumps({name: getattr(summary, name) for name in COUNTS}),
        "model_name": config.model,
        "model_fingerprint": run.prepared.fingerprint,
        "settings": json.dumps(run.settings, sort_keys=True, default=str),
    }
    if not files and not len(plan.deleted):
        summary.version = summary.previous_version
    elif files and (run.table is None or not plan.carried):
        # Every row is new: the workers' files become the table (no rows through the driver).
        summary.version = commit_files(
            config.store, run.table, staging.fs, files, run.run_id,
            metadata=metadata, storage_options=options,
        )  # fmt: skip
    else:
        summary.version = commit(
            config.store, run.table, _stream(staging, files), plan.deleted,
            metadata=metadata, storage_options=options, target_file_mb=config.target_file_mb,
        )  # fmt: skip
    if summary.version != summary.previous_version:
        summary.expired_files = len(store.expire(config.store, config.keep_versions, options))
    staging.finish(run.run_id)


def config_options(config: ReprocessConfig) -> dict | None:
    return config.storage_options or None


def _annotate(run: _Run, todo_dir: str, summary: ReprocessSummary, after_file) -> None:
    """Run the annotation pipeline over the to-do input; its workers write the run's files."""
    config, staging, run_id = run.config, run.staging, run.run_id
    on_stats = None
    if after_file is not None:

        def on_stats(row: dict) -> None:
            after_file(row["file"])

    out_dir = staging.out_dir(run_id)
    annotate_config = config.annotate_config([todo_dir], out_dir, run_id)
    writer = StoreShardWriter(
        out_dir,
        settings_fingerprint=run.settings_fp,
        model_name=config.model,
        model_fingerprint=run.prepared.fingerprint,
        run_id=run_id,
        passthrough=annotate_config.passthrough,
        include_text=config.include_text,
        filesystem=staging.fs,
    )
    summary.annotate = run_annotate(
        annotate_config,
        on_stats=on_stats,
        # The plan above already left out what an earlier attempt wrote, by
        # doc_id; the staging file's rows differ, so row hashes cannot match.
        resume=False,
        writer=writer,
        filesystem=staging.fs,
    )
    print(summary.annotate.format(), flush=True)
    if not summary.annotate.balanced:
        raise ReprocessError("annotation rows_in != rows_out + rows_rejected")


def _check_files(staging: S.Staging, files: list[str], needed: pa.Table) -> tuple[int, int]:
    """Rows and rejected rows of the run's files, checked: every needed document exactly once.

    Reads the files' ids and statuses only, and keeps the ids alone (the run's size,
    never the corpus'). The ids suffice: files whose text hashes the plan does not
    need were dropped before the run (:meth:`Staging.keep_needed`), and the rest
    were written from the plan's to-do input.
    """
    ids, rejected = [], 0
    for path in files:
        part = pq.read_table(path, columns=[C.DOC_ID, C.STATUS], filesystem=staging.fs)
        rejected += pc.sum(pc.equal(part[C.STATUS], C.STATUS_REJECTED)).as_py() or 0
        ids.extend(part[C.DOC_ID].chunks)
    ids = pa.chunked_array(ids, pa.string())
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ConcurrentCommitError(
            "the run's files hold a document twice (another attempt of this run wrote at the "
            "same time); nothing committed: rerun to resume"
        )
    missing = pc.invert(pc.is_in(needed[C.DOC_ID], value_set=ids))
    if len(ids) != needed.num_rows or pc.any(missing).as_py():
        examples = needed[C.DOC_ID].filter(missing)[:3].to_pylist()
        raise ReprocessError(
            f"{pc.sum(missing).as_py() or 0:,} document(s) missing from the run's output "
            f"(e.g. {examples}); {len(ids):,} written for {needed.num_rows:,} planned; "
            "nothing committed"
        )
    return len(ids), rejected


def _stream(staging: S.Staging, files: list[str]) -> pa.RecordBatchReader | pa.Table:
    """The run's rows, a batch at a time, for the merge."""
    if not files:
        return pa.table({C.DOC_ID: pa.array([], pa.string())})
    schema = pq.read_schema(files[0], filesystem=staging.fs).remove_metadata()

    def batches():
        for path in files:
            with staging.fs.open_input_file(path) as handle:
                yield from pq.ParquetFile(handle).iter_batches(batch_size=4096)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _print_plan(config: ReprocessConfig, summary: ReprocessSummary, files: int, verb: str) -> None:
    previous = "none" if summary.previous_version is None else summary.previous_version
    print(
        f"{verb} {summary.run_id} on {config.store} (table version {previous}); "
        f"{summary.documents:,} documents in {files:,} file(s)\n"
        + (f"{summary.pubmed_state}\n" if summary.pubmed_state else "")
        + f"{summary.annotated:,} to annotate: {summary.counts()}",
        flush=True,
    )

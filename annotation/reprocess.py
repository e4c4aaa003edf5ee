"""Incremental reprocessing: plan what changed, annotate it, carry the rest, publish a snapshot.

Compares the corpus with the store's latest complete snapshot and annotates only
the documents that are new, whose text changed (content hash of the text columns),
or whose annotations came from another model or other annotation settings; the
other documents' rows are carried over unchanged (same run_id and annotated_at).
Documents gone from the corpus are dropped. The documents to annotate are staged
as Parquet and annotated by :func:`annotation.run.run_annotate` straight into the
new snapshot's directory; the store (:mod:`annotation.snapshots`) publishes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation import snapshots as S
from annotation.config import CONTENT_HASH, ROW_SETTINGS, ReprocessConfig
from annotation.hashing import content_hash, format_checksum, settings_fingerprint
from annotation.run import RunSummary, prepare_run, run_annotate
from ner import columns as C
from ner.atomic import write_parquet_atomic
from ner.corpus import InputError
from ner.failpoints import failpoint
from ner.writer import safe_stem

SCAN_BATCH_ROWS = 8192
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
    """A check before publishing failed; nothing was published."""


@dataclass
class ReprocessSummary:
    """What one run did; printed, and stored in the manifest."""

    run_id: str
    previous: str | None = None
    sequence: int = 0
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
    rows: int = 0
    rejected_rows: int = 0
    checksum: str = ""
    reason: str = ""  # why everything was re-annotated, if it was
    wall_s: float = 0.0
    annotate: RunSummary | None = field(default=None, repr=False)

    def counts(self) -> str:
        return (
            f"new {self.new:,}, changed {self.changed:,}, model_changed {self.model_changed:,}, "
            f"carried {self.carried:,}, deleted {self.deleted:,}, annotated {self.annotated:,}"
            + (f", resumed {self.resumed:,}" if self.resumed else "")
        )

    def format(self) -> str:
        lines = [
            f"snapshot {self.run_id} (sequence {self.sequence}, previous {self.previous or 'none'})",
            self.counts(),
            f"documents {self.documents:,} == rows {self.rows:,} + rejected {self.rejected_rows:,}",
            f"checksum {self.checksum}; wall {self.wall_s:.1f} s",
        ]
        if self.reason:
            lines.insert(2, f"all documents re-annotated: {self.reason}")
        if self.null_ids or self.duplicate_ids:
            lines.append(
                f"WARNING: {self.null_ids:,} row(s) without an id skipped; "
                f"{self.duplicate_ids:,} repeated id(s) with identical text annotated once"
            )
        return "\n".join(lines)


@dataclass
class _Previous:
    """The previous snapshot, as far as deciding what to annotate needs it."""

    manifest: dict | None
    hashes: dict[str, str]  # doc_id -> content hash (annotated and rejected documents)
    stale: set[str]  # doc_ids annotated by another model or other settings
    reason: str


@dataclass
class _Plan:
    needed: dict[str, str] = field(default_factory=dict)  # doc_id -> hash, to be annotated
    corpus: dict[str, str] = field(default_factory=dict)  # doc_id -> hash, every document
    carried: set[str] = field(default_factory=set)
    todo_files: list[str] = field(default_factory=list)
    todo_rows: int = 0
    resumed: int = 0


def _load_previous(store: Path, fingerprint: str, settings_fp: str) -> _Previous:
    manifest = S.latest_snapshot(store)
    if manifest is None:
        return _Previous(None, {}, set(), "")
    hashes: dict[str, str] = {}
    stale: set[str] = set()
    reason = ""
    if manifest["settings_fingerprint"] != settings_fp:
        reason = "annotation settings changed"
    elif manifest["model_fingerprint"] != fingerprint:
        reason = f"model changed ({manifest['model_fingerprint']} -> {fingerprint})"
    for entry in manifest["files"]:
        table = pq.read_table(
            store / entry["path"], columns=[C.DOC_ID, CONTENT_HASH, C.MODEL_FINGERPRINT]
        )
        for doc_id, digest, model in zip(*(c.to_pylist() for c in table.columns), strict=True):
            hashes[doc_id] = digest
            if model != fingerprint or reason:
                stale.add(doc_id)
    for entry in manifest["rejected_files"]:
        # A snapshot holds one model's work, so rejected records carry the manifest's model.
        table = pq.read_table(store / entry["path"], columns=[C.DOC_ID, CONTENT_HASH])
        for doc_id, digest in zip(*(c.to_pylist() for c in table.columns), strict=True):
            hashes[doc_id] = digest
            if reason:
                stale.add(doc_id)
    return _Previous(manifest, hashes, stale, reason)


def _plan(
    config: ReprocessConfig,
    filesystem: pafs.FileSystem,
    files: list[str],
    previous: _Previous,
    done: dict[str, set[str]],
    todo_dir: Path,
    summary: ReprocessSummary,
) -> _Plan:
    """One streaming pass over the corpus: hash, classify, and stage the to-do documents."""
    plan = _Plan()
    conflicts: list[str] = []
    read_columns = list(
        dict.fromkeys([config.id_column, *config.text_columns, *config.passthrough])
    )
    for k, path in enumerate(files):
        parts = []
        with filesystem.open_input_file(path) as handle:
            reader = pq.ParquetFile(handle)
            for batch in reader.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=read_columns):
                ids = batch.column(config.id_column).to_pylist()
                texts = [batch.column(name).to_pylist() for name in config.text_columns]
                take, digests = [], []
                for i, raw in enumerate(ids):
                    if raw is None:
                        summary.null_ids += 1
                        continue
                    doc_id = str(raw)
                    digest = content_hash([column[i] for column in texts])
                    seen = plan.corpus.get(doc_id)
                    if seen is not None:
                        if seen == digest:
                            summary.duplicate_ids += 1
                        else:
                            conflicts.append(doc_id)
                        continue
                    plan.corpus[doc_id] = digest
                    before = previous.hashes.get(doc_id)
                    if before is None:
                        summary.new += 1
                    elif before != digest:
                        summary.changed += 1
                    elif doc_id in previous.stale:
                        summary.model_changed += 1
                    else:
                        summary.carried += 1
                        plan.carried.add(doc_id)
                        continue
                    plan.needed[doc_id] = digest
                    if digest in done.get(doc_id, ()):
                        plan.resumed += 1
                        continue
                    take.append(i)
                    digests.append(digest)
                if take:
                    rows = batch.take(pa.array(take, pa.int64()))
                    parts.append(rows.append_column(CONTENT_HASH, pa.array(digests, pa.string())))
        if parts:
            target = todo_dir / f"f{k:05d}-{safe_stem(path, 60)}.parquet"
            table = pa.Table.from_batches(parts)
            write_parquet_atomic(table, target)
            plan.todo_files.append(str(target))
            plan.todo_rows += table.num_rows
    if conflicts:
        raise InputError(
            f"{len(conflicts):,} doc_id(s) occur more than once with different text, e.g. "
            + ", ".join(conflicts[:5])
            + "; the store is keyed by doc_id"
        )
    summary.documents = len(plan.corpus)
    summary.deleted = len(previous.hashes) - summary.changed - summary.model_changed
    summary.deleted -= summary.carried
    return plan


def run_reprocess(
    config: ReprocessConfig, *, after_file: Callable[[str], None] | None = None
) -> ReprocessSummary:
    """Plan, annotate what changed, carry the rest, publish a snapshot.

    ``after_file`` is called with each file the annotation pipeline writes (tests
    raise from it to simulate a crash part-way through a run).
    """
    started = time.perf_counter()
    store = Path(config.store).expanduser().resolve()
    prepared = prepare_run(config, str(store))
    fingerprint = prepared.fingerprint
    settings_fp = settings_fingerprint({name: getattr(config, name) for name in ROW_SETTINGS})

    store.mkdir(parents=True, exist_ok=True)
    with S.StoreLock(store):
        run_id, resuming = S.choose_run_id(store, config.run_id)
        previous = _load_previous(store, fingerprint, settings_fp)
        summary = ReprocessSummary(
            run_id=run_id,
            previous=previous.manifest["snapshot_id"] if previous.manifest else None,
            reason=previous.reason,
        )
        todo_dir = S.open_run(store, run_id, fingerprint, settings_fp)
        run_dir = store / S.SNAPSHOTS / run_id
        done = S.already_written(run_dir)
        plan = _plan(config, prepared.filesystem, prepared.files, previous, done, todo_dir, summary)
        summary.annotated, summary.resumed = plan.todo_rows, plan.resumed
        print(
            f"{'resuming' if resuming else 'run'} {run_id} on {store} "
            f"(previous snapshot {summary.previous or 'none'}; model {fingerprint}); "
            f"{summary.documents:,} documents in {len(prepared.files):,} file(s)\n"
            f"{plan.todo_rows:,} to annotate: {summary.counts()}",
            flush=True,
        )
        failpoint("reprocess.before_annotate")
        if plan.todo_rows:
            on_stats = None
            if after_file is not None:

                def on_stats(row: dict) -> None:
                    for name in (row["file"], row["rejected_file"]):
                        if name:
                            after_file(name)

            summary.annotate = run_annotate(
                config.annotate_config([str(todo_dir)], str(run_dir), run_id),
                rejected_columns=[CONTENT_HASH],
                on_stats=on_stats,
                # The plan above already left out what an earlier attempt wrote, by
                # doc_id; the staging file's rows differ, so row hashes cannot match.
                resume=False,
            )
            print(summary.annotate.format(), flush=True)
            if not summary.annotate.balanced:
                raise ReprocessError("annotation rows_in != rows_out + rows_rejected")
        files: dict[Path, int | None] = dict.fromkeys(S.keep_needed(run_dir, plan.needed))
        files.update(S.carry(store, run_dir, previous.manifest, plan.carried))
        try:
            entries = S.check_and_list(store, files, set(plan.corpus))
        except S.SnapshotCheckError as err:
            raise ReprocessError(f"snapshot {run_id}: {err}") from err
        summary.rows = sum(e["rows"] for e in entries["files"])
        summary.rejected_rows = sum(e["rows"] for e in entries["rejected_files"])
        summary.checksum = format_checksum(entries["checksum"])
        summary.sequence = (previous.manifest["sequence"] + 1) if previous.manifest else 1
        manifest = {
            "snapshot_id": run_id,
            "sequence": summary.sequence,
            "previous": summary.previous,
            "published_at": datetime.now(UTC).isoformat(),
            "model_name": config.model,
            "model_fingerprint": fingerprint,
            "settings": {name: getattr(config, name) for name in ROW_SETTINGS},
            "settings_fingerprint": settings_fp,
            "inputs": [asdict(item) for item in prepared.inputs],
            "counts": {name: getattr(summary, name) for name in COUNTS},
            "rows": summary.rows,
            "rejected_rows": summary.rejected_rows,
            "content_checksum": summary.checksum,
            "files": entries["files"],
            "rejected_files": entries["rejected_files"],
            "config": asdict(config),
        }
        S.publish(store, files, manifest)
        S.clean_up(store, run_id, config.keep_snapshots)
    summary.wall_s = time.perf_counter() - started
    return summary

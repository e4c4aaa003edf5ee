"""Incremental reprocessing into an annotation store, published atomically; fit for cron.

python -m jobs.reprocess --config configs/reprocess_cpu.yaml input=DIR_OR_URI store=DIR [key=value ...]

Compares the corpus with the store's latest complete snapshot and annotates only
the documents that are new, whose text changed (content hash of the text columns),
or whose annotations came from another model or other annotation settings; the
other documents' rows are carried over unchanged (same run_id and annotated_at).
Documents gone from the corpus are dropped. The documents to annotate are written
to a staging Parquet file and annotated by the jobs.annotate pipeline straight
into the new snapshot's directory; the manifest ``manifests/<snapshot_id>.json``
is written last, by atomic rename (layout: :mod:`ner.store`).

A run that crashes leaves no manifest, so readers keep seeing the previous
snapshot. Rerun with the same run_id (or with none: the newest crashed run is
resumed) and the documents it already wrote are skipped. With nothing to do,
no model is loaded and Ray is not started. One run at a time per store (flock).

Exit codes: 0 published; 1 a check failed (nothing published); 2 bad input or
config; 3 another run holds the store.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.annotate import AnnotateConfig, RunSummary, run_annotate
from ner import columns as C
from ner.config import ConfigError, option, parse_job_args
from ner.corpus import InputError, expand_inputs, validate_inputs
from ner.failpoints import failpoint
from ner.model import model_fingerprint, resolve_model
from ner.store import (
    CONTENT_HASH,
    FORMAT,
    MANIFESTS,
    SNAPSHOTS,
    STAGING,
    StoreLock,
    StoreLockedError,
    combine_checksums,
    content_hash,
    format_checksum,
    fsync_files,
    get_snapshot,
    latest_snapshot,
    link_or_copy,
    list_snapshots,
    read_snapshot,
    settings_fingerprint,
    table_checksum,
    write_json_atomic,
    write_parquet_atomic,
)
from ner.writer import REJECTED_DIR

__all__ = [
    "ReprocessConfig",
    "ReprocessSummary",
    "get_snapshot",
    "latest_snapshot",
    "main",
    "read_snapshot",
    "run_reprocess",
]

# Settings that shape the annotation rows: a change re-annotates every document.
ROW_SETTINGS = (
    "id_column",
    "text_columns",
    "separator",
    "passthrough",
    "include_text",
    "max_length",
    "stride",
    "word_unit",
    "max_chars",
)
CARRIED = "carried-"  # prefix of files carried over from the previous snapshot
RUN_STATE = "run.json"  # in staging/<run_id>/: model and settings of a run in progress
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SCAN_BATCH_ROWS = 8192


class ReprocessError(RuntimeError):
    """A check before publishing failed; nothing was published."""


@dataclass
class ReprocessConfig(AnnotateConfig):
    """The annotation settings of jobs.annotate, plus the store; ``output`` is the store's business."""

    store: str = option(
        "outputs/store",
        "annotation store directory (local or a mounted volume): manifests/, snapshots/, staging/",
    )
    output: str = option("", "not used: annotations go to <store>/snapshots/<snapshot_id>/")
    remove_stale: bool = option(True, "not used: the store's manifests say which files count")
    run_id: str = option(
        "",
        "snapshot id, also written with every new row; empty = resume the newest crashed run, "
        "else UTC time + random suffix",
    )
    keep_snapshots: int = option(
        3, "complete snapshots kept after a publish, newest first; older ones are deleted"
    )

    def check(self) -> None:
        super().check()
        if self.output:
            raise ConfigError("reprocess writes into `store`; leave `output` unset")
        if not self.remove_stale:
            raise ConfigError("remove_stale does not apply to reprocess")
        if not self.store:
            raise ConfigError("store must name a directory")
        if "://" in self.store:
            raise ConfigError("store must be a local or mounted directory (atomic rename, flock)")
        if self.keep_snapshots < 1:
            raise ConfigError("keep_snapshots must be at least 1")
        if self.run_id and not _RUN_ID.match(self.run_id):
            raise ConfigError(f"run_id {self.run_id!r}: use letters, digits, '.', '_' and '-'")
        if CONTENT_HASH in (self.id_column, *self.text_columns, *self.passthrough):
            raise ConfigError(f"column name {CONTENT_HASH!r} is reserved by reprocess")

    def annotate_config(self, input: list[str], output: str, run_id: str) -> AnnotateConfig:
        """The jobs.annotate config for this run's to-do documents."""
        values = {f.name: getattr(self, f.name) for f in fields(AnnotateConfig)}
        values.update(
            input=input,
            output=output,
            run_id=run_id,
            passthrough=[*self.passthrough, CONTENT_HASH],
            remove_stale=False,  # a resumed run keeps the files its first attempt wrote
        )
        return AnnotateConfig(**values)


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
    manifest = latest_snapshot(store)
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


def _written_files(run_dir: Path) -> list[Path]:
    """Annotation files (main and rejected) an attempt of this run wrote, carried ones excluded."""
    found = []
    for folder in (run_dir, run_dir / REJECTED_DIR):
        if folder.is_dir():
            found += sorted(
                p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_", CARRIED))
            )
    return found


def _already_written(run_dir: Path) -> dict[str, set[str]]:
    """doc_id -> content hashes an earlier attempt of this run annotated (or rejected)."""
    done: dict[str, set[str]] = {}
    for path in _written_files(run_dir):
        table = pq.read_table(path, columns=[C.DOC_ID, CONTENT_HASH])
        for doc_id, digest in zip(*(c.to_pylist() for c in table.columns), strict=True):
            done.setdefault(doc_id, set()).add(digest)
    return done


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
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.rsplit("/", 1)[-1])
            target = todo_dir / f"f{k:05d}-{stem.removesuffix('.parquet')[:60]}.parquet"
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


def _choose_run_id(store: Path, requested: str) -> tuple[str, bool]:
    """The run's id and whether it resumes a crashed run (one with no manifest)."""
    published = {m["snapshot_id"] for m in list_snapshots(store)}
    if requested:
        if requested in published:
            raise ConfigError(f"snapshot {requested} is already published; pick a new run_id")
        return requested, (store / STAGING / requested / RUN_STATE).is_file()
    crashed = []
    staging = store / STAGING
    if staging.is_dir():
        for state in staging.glob(f"*/{RUN_STATE}"):
            if state.parent.name not in published:
                crashed.append((state.stat().st_mtime, state.parent.name))
    if crashed:
        return max(crashed)[1], True
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6], False


def _prepare_run(store: Path, run_id: str, fingerprint: str, settings_fp: str) -> Path:
    """Create or reopen the run's staging dir; a new attempt gets a fresh to-do folder."""
    staging = store / STAGING / run_id
    run_dir = store / SNAPSHOTS / run_id
    state_path = staging / RUN_STATE
    state = {"run_id": run_id, "attempts": 0}
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if (state.get("model_fingerprint"), state.get("settings_fingerprint")) != (
            fingerprint,
            settings_fp,
        ):
            print(f"run {run_id}: model or settings differ from its crashed attempt; starting over")
            shutil.rmtree(run_dir, ignore_errors=True)
            state["attempts"] = 0
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # data without a run state: nothing to trust
    for old in staging.glob("a*") if staging.is_dir() else []:
        shutil.rmtree(old)  # earlier attempts' to-do input; their output stays in run_dir
    state.update(
        model_fingerprint=fingerprint,
        settings_fingerprint=settings_fp,
        attempts=state.get("attempts", 0) + 1,
        updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json_atomic(state_path, state)
    run_dir.mkdir(parents=True, exist_ok=True)
    return staging / f"a{state['attempts']:03d}"


def _keep_needed(run_dir: Path, needed: dict[str, str]) -> list[Path]:
    """Drop rows an earlier attempt wrote that are no longer wanted (or written twice)."""
    kept, seen = [], set()
    for path in _written_files(run_dir):
        table = pq.read_table(path)
        mask = []
        for doc_id, digest in zip(
            table.column(C.DOC_ID).to_pylist(), table.column(CONTENT_HASH).to_pylist(), strict=True
        ):
            keep = needed.get(doc_id) == digest and doc_id not in seen
            if keep:
                seen.add(doc_id)
            mask.append(keep)
        if all(mask):
            kept.append(path)
        elif not any(mask):
            path.unlink()
        else:
            write_parquet_atomic(table.filter(pa.array(mask)), path)
            kept.append(path)
    return kept


def _carry(store: Path, run_dir: Path, previous: _Previous, carried: set[str]) -> dict:
    """Carried rows into the new snapshot: whole files by hard link, others filtered.

    Returns {new path: checksum or None (compute it)}.
    """
    for stale in [*run_dir.glob(f"{CARRIED}*"), *(run_dir / REJECTED_DIR).glob(f"{CARRIED}*")]:
        stale.unlink()  # from a publish that crashed; rebuilt below
    out: dict[Path, int | None] = {}
    if previous.manifest is None or not carried:
        return out
    for key, folder in (("files", run_dir), ("rejected_files", run_dir / REJECTED_DIR)):
        for entry in previous.manifest[key]:
            source = store / entry["path"]
            ids = pq.read_table(source, columns=[C.DOC_ID]).column(C.DOC_ID).to_pylist()
            mask = [doc_id in carried for doc_id in ids]
            if not any(mask):
                continue
            name = f"{CARRIED}{content_hash([entry['path']])[:16]}.parquet"
            folder.mkdir(parents=True, exist_ok=True)
            if all(mask):
                link_or_copy(source, folder / name)
                out[folder / name] = int(entry["checksum"], 16)
            else:
                write_parquet_atomic(pq.read_table(source).filter(pa.array(mask)), folder / name)
                out[folder / name] = None
    return out


def _publish(
    store: Path,
    run_dir: Path,
    config: ReprocessConfig,
    plan: _Plan,
    previous: _Previous,
    summary: ReprocessSummary,
    fingerprint: str,
    settings_fp: str,
    inputs: list,
) -> Path:
    """Check exactly-once against the corpus, then write the manifest (last)."""
    files: dict[Path, int | None] = dict.fromkeys(_keep_needed(run_dir, plan.needed))
    files.update(_carry(store, run_dir, previous, plan.carried))
    entries = {"files": [], "rejected_files": []}
    seen: set[str] = set()
    duplicates = 0
    checksums = []
    for path in sorted(files):
        checksum = files[path]
        table = pq.read_table(path) if checksum is None else None
        ids = (table if table is not None else pq.read_table(path, columns=[C.DOC_ID])).column(
            C.DOC_ID
        )
        for doc_id in ids.to_pylist():
            duplicates += doc_id in seen
            seen.add(doc_id)
        if checksum is None:
            checksum = table_checksum(table)
        checksums.append(checksum)
        key = "rejected_files" if path.parent.name == REJECTED_DIR else "files"
        entries[key].append(
            {
                "path": str(path.relative_to(store)),
                "rows": len(ids),
                "checksum": format_checksum(checksum),
            }
        )
    missing = set(plan.corpus) - seen
    extra = seen - set(plan.corpus)
    if duplicates or missing or extra:
        raise ReprocessError(
            f"snapshot {summary.run_id} does not hold every document exactly once: "
            f"{duplicates} duplicate(s), {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} unexpected; nothing published"
        )
    summary.rows = sum(e["rows"] for e in entries["files"])
    summary.rejected_rows = sum(e["rows"] for e in entries["rejected_files"])
    summary.checksum = format_checksum(combine_checksums(checksums))
    summary.sequence = (previous.manifest["sequence"] + 1) if previous.manifest else 1
    fsync_files(sorted(files))
    failpoint("reprocess.before_manifest")  # every file in place, the snapshot not yet published
    manifest = {
        "format": FORMAT,
        "snapshot_id": summary.run_id,
        "sequence": summary.sequence,
        "previous": summary.previous,
        "published_at": datetime.now(UTC).isoformat(),
        "model_name": config.model,
        "model_fingerprint": fingerprint,
        "settings": {name: getattr(config, name) for name in ROW_SETTINGS},
        "settings_fingerprint": settings_fp,
        "inputs": [asdict(item) for item in inputs],
        "counts": {
            name: getattr(summary, name)
            for name in (
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
        },
        "rows": summary.rows,
        "rejected_rows": summary.rejected_rows,
        "content_checksum": summary.checksum,
        "files": entries["files"],
        "rejected_files": entries["rejected_files"],
        "config": asdict(config),
    }
    return write_json_atomic(store / MANIFESTS / f"{summary.run_id}.json", manifest)


def _clean_up(store: Path, run_id: str, keep: int) -> None:
    """After a publish: drop this run's staging, crashed runs, and snapshots beyond ``keep``."""
    shutil.rmtree(store / STAGING / run_id, ignore_errors=True)
    snapshots = list_snapshots(store)
    published = {m["snapshot_id"] for m in snapshots}
    for folder in (store / STAGING, store / SNAPSHOTS):
        for path in folder.iterdir() if folder.is_dir() else []:
            if path.is_dir() and path.name not in published:
                shutil.rmtree(path, ignore_errors=True)
    for manifest in snapshots[:-keep]:
        # The manifest goes first, so no reader can resolve a snapshot whose files are gone.
        (store / MANIFESTS / f"{manifest['snapshot_id']}.json").unlink(missing_ok=True)
        shutil.rmtree(store / SNAPSHOTS / manifest["snapshot_id"], ignore_errors=True)
    for temporary in (store / MANIFESTS).glob(".tmp-*"):
        temporary.unlink(missing_ok=True)


def run_reprocess(
    config: ReprocessConfig, *, after_file: Callable[[str], None] | None = None
) -> ReprocessSummary:
    """Plan, annotate what changed, carry the rest, publish a snapshot.

    ``after_file`` is called with each file the annotation pipeline writes (tests
    raise from it to simulate a crash part-way through a run).
    """
    config.check()
    started = time.perf_counter()
    store = Path(config.store).expanduser().resolve()
    filesystem, files = expand_inputs(config.input)
    inputs = validate_inputs(
        filesystem, files, config.id_column, config.text_columns, config.passthrough
    )
    resolve_model(config.model)
    fingerprint = model_fingerprint(config.model)
    settings_fp = settings_fingerprint({name: getattr(config, name) for name in ROW_SETTINGS})

    store.mkdir(parents=True, exist_ok=True)
    with StoreLock(store):
        run_id, resuming = _choose_run_id(store, config.run_id)
        previous = _load_previous(store, fingerprint, settings_fp)
        summary = ReprocessSummary(
            run_id=run_id,
            previous=previous.manifest["snapshot_id"] if previous.manifest else None,
            reason=previous.reason,
        )
        todo_dir = _prepare_run(store, run_id, fingerprint, settings_fp)
        run_dir = store / SNAPSHOTS / run_id
        done = _already_written(run_dir)
        plan = _plan(config, filesystem, files, previous, done, todo_dir, summary)
        summary.annotated, summary.resumed = plan.todo_rows, plan.resumed
        print(
            f"{'resuming' if resuming else 'run'} {run_id} on {store} "
            f"(previous snapshot {summary.previous or 'none'}; model {fingerprint}); "
            f"{summary.documents:,} documents in {len(files):,} file(s)\n"
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
        _publish(store, run_dir, config, plan, previous, summary, fingerprint, settings_fp, inputs)
        _clean_up(store, run_id, config.keep_snapshots)
    summary.wall_s = time.perf_counter() - started
    return summary


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

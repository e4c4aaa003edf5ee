"""The reprocessing snapshot store: immutable snapshots, each published by a manifest written last.

Layout under ``<store>`` (a local or mounted POSIX directory: publishing relies on
``os.replace`` and the lock on ``flock``)::

    manifests/<snapshot_id>.json               written last, by atomic rename: the snapshot exists
    snapshots/<snapshot_id>/*.parquet          one annotation row per document
    snapshots/<snapshot_id>/_rejected/*.parquet  documents that could not be annotated
    staging/<snapshot_id>/                     a run's bookkeeping and to-do input
    .lock                                      flock'ed by the run in progress

Readers resolve snapshots through manifests only, so a directory without a manifest
(a run in progress, or one that crashed) is never read, and a reader never sees half
a run. Data files are never modified in place: a file is written under a temporary
name and renamed (:mod:`ner.atomic`), so files may be shared between snapshots by
hard links. A run: :func:`open_run` (new or resumed), annotate into
``snapshots/<id>/``, :func:`carry` the unchanged rows, :func:`publish`, :func:`clean_up`.
(A table format such as Delta Lake or Iceberg is meant to replace this store.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation.config import CONTENT_HASH, new_run_id
from annotation.hashing import combine_checksums, content_hash, format_checksum, table_checksum
from ner import columns as C
from ner.atomic import TEMPORARY_PREFIX, fsync_files, write_json_atomic, write_parquet_atomic
from ner.config import ConfigError
from ner.failpoints import failpoint
from ner.writer import REJECTED_DIR, list_written

__all__ = ["CONTENT_HASH", "get_snapshot", "latest_snapshot", "list_snapshots", "read_snapshot"]

MANIFESTS = "manifests"
SNAPSHOTS = "snapshots"
STAGING = "staging"
LOCK_FILE = ".lock"
FORMAT = 1  # manifest format version
CARRIED = "carried-"  # prefix of files carried over from the previous snapshot
RUN_STATE = "run.json"  # in staging/<run_id>/: model and settings of a run in progress


class SnapshotCheckError(RuntimeError):
    """A check before publishing failed; nothing was published."""


class NoSnapshotError(FileNotFoundError):
    """The store holds no complete snapshot (or not the one asked for)."""


class StoreLockedError(RuntimeError):
    """Another run holds the store's lock."""


# --- readers --------------------------------------------------------------------
def list_snapshots(store: str | os.PathLike) -> list[dict]:
    """Manifests of the complete snapshots, oldest first (by sequence number)."""
    folder = Path(store) / MANIFESTS
    if not folder.is_dir():
        return []
    manifests = []
    for path in folder.glob("*.json"):
        if path.name.startswith(TEMPORARY_PREFIX):  # a manifest being written
            continue
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # cannot happen with atomic renames; never let it hide the others
        if manifest.get("snapshot_id") == path.stem:
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: (m["sequence"], m["published_at"]))


def latest_snapshot(store: str | os.PathLike) -> dict | None:
    """The manifest of the newest complete snapshot, or None for an empty store."""
    snapshots = list_snapshots(store)
    return snapshots[-1] if snapshots else None


def get_snapshot(store: str | os.PathLike, snapshot_id: str | None = None) -> dict:
    """A snapshot's manifest: the latest one, or the one named."""
    if snapshot_id is None:
        manifest = latest_snapshot(store)
        if manifest is None:
            raise NoSnapshotError(f"store {store} holds no complete snapshot")
        return manifest
    path = Path(store) / MANIFESTS / f"{snapshot_id}.json"
    if not path.is_file():
        raise NoSnapshotError(f"store {store} has no complete snapshot {snapshot_id}")
    return json.loads(path.read_text(encoding="utf-8"))


def read_snapshot(
    store: str | os.PathLike,
    snapshot_id: str | None = None,
    *,
    rejected: bool = False,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """All annotation rows (or, with ``rejected``, rejected records) of a complete snapshot.

    The latest snapshot unless ``snapshot_id`` names one. Only the files its manifest
    lists are read. An empty snapshot gives a table with only ``doc_id``.
    """
    manifest = get_snapshot(store, snapshot_id)
    entries = manifest["rejected_files" if rejected else "files"]
    tables = [pq.read_table(Path(store) / entry["path"], columns=columns) for entry in entries]
    if not tables:
        return pa.table({C.DOC_ID: pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="default")


# --- a run ----------------------------------------------------------------------
def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Share an immutable data file with a new snapshot: a hard link, else a copy."""
    target = Path(target)
    temporary = target.parent / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}.parquet"
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def written_files(run_dir: Path) -> list[Path]:
    """Annotation files (main and rejected) an attempt of this run wrote, carried ones excluded."""
    paths = list_written(pafs.LocalFileSystem(), str(run_dir), exclude_prefix=CARRIED)
    return [Path(p) for p in paths]


def already_written(run_dir: Path) -> dict[str, set[str]]:
    """doc_id -> content hashes an earlier attempt of this run annotated (or rejected)."""
    done: dict[str, set[str]] = {}
    for path in written_files(run_dir):
        table = pq.read_table(path, columns=[C.DOC_ID, CONTENT_HASH])
        for doc_id, digest in zip(*(c.to_pylist() for c in table.columns), strict=True):
            done.setdefault(doc_id, set()).add(digest)
    return done


def choose_run_id(store: Path, requested: str) -> tuple[str, bool]:
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
    return new_run_id(), False


def open_run(store: Path, run_id: str, fingerprint: str, settings_fp: str) -> Path:
    """Create or reopen the run's staging dir; returns a fresh to-do folder for this attempt.

    A crashed attempt's output is kept only if it used the same model and settings.
    """
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


def keep_needed(run_dir: Path, needed: dict[str, str]) -> list[Path]:
    """Drop rows an earlier attempt wrote that are no longer wanted (or written twice)."""
    kept, seen = [], set()
    for path in written_files(run_dir):
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


def carry(store: Path, run_dir: Path, previous: dict | None, carried: set[str]) -> dict:
    """Carried rows into the new snapshot: whole files by hard link, others filtered.

    ``previous`` is the previous snapshot's manifest. Returns {new path: checksum,
    or None where it must be computed}.
    """
    for stale in [*run_dir.glob(f"{CARRIED}*"), *(run_dir / REJECTED_DIR).glob(f"{CARRIED}*")]:
        stale.unlink()  # from a publish that crashed; rebuilt below
    out: dict[Path, int | None] = {}
    if previous is None or not carried:
        return out
    for key, folder in (("files", run_dir), ("rejected_files", run_dir / REJECTED_DIR)):
        for entry in previous[key]:
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


def check_and_list(store: Path, files: dict[Path, int | None], expected: set[str]) -> dict:
    """Check that ``files`` hold every id of ``expected`` exactly once; their manifest entries.

    Returns ``{"files": [...], "rejected_files": [...], "checksum": int}``; raises
    :class:`SnapshotCheckError` on a duplicate, missing or unexpected document.
    """
    entries: dict = {"files": [], "rejected_files": []}
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
    missing, extra = expected - seen, seen - expected
    if duplicates or missing or extra:
        raise SnapshotCheckError(
            f"the snapshot does not hold every document exactly once: {duplicates} duplicate(s), "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} unexpected; "
            "nothing published"
        )
    entries["checksum"] = combine_checksums(checksums)
    return entries


def publish(store: Path, files: Iterable[Path], manifest: dict) -> Path:
    """Make ``files`` durable, then publish ``manifest`` (``snapshot_id`` names it) last."""
    fsync_files(sorted(files))
    failpoint("reprocess.before_manifest")  # every file in place, the snapshot not yet published
    path = store / MANIFESTS / f"{manifest['snapshot_id']}.json"
    return Path(write_json_atomic(path, {"format": FORMAT, **manifest}))


def clean_up(store: Path, run_id: str, keep: int) -> None:
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
    for temporary in (store / MANIFESTS).glob(f"{TEMPORARY_PREFIX}*"):
        temporary.unlink(missing_ok=True)


# --- lock -----------------------------------------------------------------------
class StoreLock:
    """Exclusive lock on a store for one run: ``flock`` on ``<store>/.lock``.

    The kernel drops an flock when its process dies, however it dies, so a crashed
    run never leaves a stale lock behind; the file only records who holds it, for
    the error message. (flock works on local disks and NFSv4 volumes, not on object
    stores.)
    """

    def __init__(self, store: str | os.PathLike):
        self.path = Path(store) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreLockedError(
                f"store {self.path.parent} is locked by another run ({holder})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

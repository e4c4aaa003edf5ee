"""The annotation store: immutable snapshots, each published by a manifest written last.

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
name and renamed, so files may be shared between snapshots by hard links.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ner import columns as C

CONTENT_HASH = "content_hash"  # sha256 (128 bits, hex) of a document's text columns
MANIFESTS = "manifests"
SNAPSHOTS = "snapshots"
STAGING = "staging"
LOCK_FILE = ".lock"
FORMAT = 1  # manifest format version


class NoSnapshotError(FileNotFoundError):
    """The store holds no complete snapshot (or not the one asked for)."""


class StoreLockedError(RuntimeError):
    """Another run holds the store's lock."""


def content_hash(values: Sequence[str | bytes | None]) -> str:
    """Hash of a document's text column values, in column order.

    Each value is length-prefixed and a null is marked, so moving text from one
    column to the next (which changes the spans' ``column``) changes the hash.
    """
    digest = hashlib.sha256()
    for value in values:
        if value is None:
            digest.update(b"N")
            continue
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        digest.update(b"S%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()[:32]


def settings_fingerprint(settings: dict) -> str:
    """Hash of the settings that shape the annotation rows (windows, columns, ...)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# --- checksums ------------------------------------------------------------------
_MOD = 1 << 128


def table_checksum(table: pa.Table) -> int:
    """Order-independent checksum of a table's rows: the sum of per-row hashes mod 2**128.

    Summing lets a snapshot's checksum be the sum of its files' checksums, so a file
    shared with the previous snapshot needs no re-reading. Every column counts,
    provenance included (carried rows keep their original run_id and annotated_at).
    """
    total = 0
    for row in table.to_pylist():
        text = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
        total += int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    return total % _MOD


def combine_checksums(values: Iterable[int]) -> int:
    return sum(values) % _MOD


def format_checksum(value: int) -> str:
    return f"{value:032x}"


# --- readers --------------------------------------------------------------------
def list_snapshots(store: str | os.PathLike) -> list[dict]:
    """Manifests of the complete snapshots, oldest first (by sequence number)."""
    folder = Path(store) / MANIFESTS
    if not folder.is_dir():
        return []
    manifests = []
    for path in folder.glob("*.json"):
        if path.name.startswith("."):  # a manifest being written
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


# --- writers --------------------------------------------------------------------
def fsync_files(paths: Iterable[str | os.PathLike]) -> None:
    """Flush files and their directories to disk, so a published manifest never outlives its data."""
    folders = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(os.path.dirname(os.path.abspath(path)))
    for folder in folders:
        _fsync_dir(folder)


def _fsync_dir(folder: str | os.PathLike) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """Write JSON under a temporary name, flush it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{path.stem}-{uuid.uuid4().hex[:8]}.json"
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)
    return path


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, path)
    return path


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Share an immutable data file with a new snapshot: a hard link, else a copy."""
    import shutil

    target = Path(target)
    temporary = target.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


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

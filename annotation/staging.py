"""A reprocessing run's local staging area: to-do input, annotated files, resume, lock.

Layout under ``<staging>`` (``<store>/_staging`` for a local store; delta-rs's
``vacuum`` leaves ``_``-prefixed folders alone)::

    <run_id>/run.json            the run's model and settings: a crashed run is resumed
    <run_id>/a<NNN>/*.parquet    an attempt's to-do input (documents not yet annotated)
    <run_id>/out/                what the annotation pipeline wrote (and out/_rejected/)
    .lock                        flock'ed by the run in progress

Nothing here is visible to readers of the store: the run's rows reach the table in
one commit (:func:`annotation.store.commit`), after which the run's folder is
deleted. A run that crashes leaves its folder; the rerun reads what ``out/``
holds and annotates only the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation.config import CONTENT_HASH, new_run_id
from ner import columns as C
from ner.atomic import write_json_atomic
from ner.config import ConfigError
from ner.writer import REJECTED_DIR, list_written

RUN_STATE = "run.json"
OUT = "out"
LOCK_FILE = ".lock"


class StoreLockedError(RuntimeError):
    """Another run holds the staging area's lock."""


def written_files(out_dir: Path) -> list[Path]:
    """Annotation files (main and rejected) that attempts of this run wrote."""
    if not out_dir.is_dir():
        return []
    return [Path(p) for p in list_written(pafs.LocalFileSystem(), str(out_dir))]


def already_written(out_dir: Path) -> pa.Table:
    """``doc_id, content_hash`` of what an earlier attempt of this run annotated (or rejected)."""
    schema = pa.schema([(C.DOC_ID, pa.string()), (CONTENT_HASH, pa.string())])
    parts = [
        pq.read_table(path, columns=[C.DOC_ID, CONTENT_HASH]).cast(schema)
        for path in written_files(out_dir)
    ]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def choose_run_id(staging: Path, requested: str, committed: dict[str, int]) -> tuple[str, bool]:
    """The run's id and whether it resumes a crashed run (one not committed).

    A staging folder of a run that is committed (it crashed after its commit) is
    deleted here.
    """
    for state in staging.glob(f"*/{RUN_STATE}") if staging.is_dir() else []:
        if state.parent.name in committed:
            shutil.rmtree(state.parent, ignore_errors=True)
    if requested:
        if requested in committed:
            raise ConfigError(
                f"run {requested} is already committed (table version "
                f"{committed[requested]}); pick a new run_id"
            )
        return requested, (staging / requested / RUN_STATE).is_file()
    crashed = [
        (state.stat().st_mtime, state.parent.name)
        for state in (staging.glob(f"*/{RUN_STATE}") if staging.is_dir() else [])
    ]
    if crashed:
        return max(crashed)[1], True
    return new_run_id(), False


def open_run(staging: Path, run_id: str, fingerprint: str, settings_fp: str) -> Path:
    """Create or reopen the run's folder; returns a fresh to-do folder for this attempt.

    A crashed attempt's output is kept only if it used the same model and settings.
    """
    folder = staging / run_id
    out_dir = folder / OUT
    state_path = folder / RUN_STATE
    state = {"run_id": run_id, "attempts": 0}
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if (state.get("model_fingerprint"), state.get("settings_fingerprint")) != (
            fingerprint,
            settings_fp,
        ):
            print(f"run {run_id}: model or settings differ from its crashed attempt; starting over")
            shutil.rmtree(out_dir, ignore_errors=True)
            state["attempts"] = 0
    elif out_dir.exists():
        shutil.rmtree(out_dir)  # data without a run state: nothing to trust
    for old in folder.glob("a*") if folder.is_dir() else []:
        shutil.rmtree(old)  # earlier attempts' to-do input; their output stays in out/
    state.update(
        model_fingerprint=fingerprint,
        settings_fingerprint=settings_fp,
        attempts=state.get("attempts", 0) + 1,
        updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json_atomic(state_path, state)
    out_dir.mkdir(parents=True, exist_ok=True)
    return folder / f"a{state['attempts']:03d}"


def read_needed(out_dir: Path, needed: pa.Table) -> tuple[pa.Table | None, pa.Table | None]:
    """The annotated and rejected rows of ``out_dir`` that the plan needs, each id once.

    ``needed`` has ``doc_id, content_hash``. Rows an earlier attempt wrote for text
    that has changed since, or twice, are left out. Filtering is vectorised: ids and
    hashes are compared as Arrow arrays.
    """
    keys = pair_keys(needed)
    out: dict[bool, list[pa.Table]] = {False: [], True: []}
    for path in written_files(out_dir):
        table = pq.read_table(path)
        table = table.filter(pc.is_in(pair_keys(table), value_set=keys))
        out[path.parent.name == REJECTED_DIR].append(table)
    tables = [
        pa.concat_tables(parts, promote_options="default") if parts else None
        for parts in (out[False], out[True])
    ]
    # Each id once, at its first row, annotated rows before rejected ones.
    present = [t for t in tables if t is not None]
    if not present:
        return None, None
    ids = pa.chunked_array([c for t in present for c in t[C.DOC_ID].chunks], pa.string())
    index = pa.table({C.DOC_ID: ids, "i": np.arange(len(ids))})
    first = index.group_by(C.DOC_ID, use_threads=False).aggregate([("i", "min")])["i_min"]
    first = first.combine_chunks()
    result, offset = [], 0
    for table in tables:
        if table is None:
            result.append(None)
            continue
        rows = np.arange(offset, offset + table.num_rows)
        offset += table.num_rows
        result.append(table.filter(pc.is_in(pa.array(rows), value_set=first)))
    return result[0], result[1]


def pair_keys(table: pa.Table) -> pa.Array:
    """``doc_id`` and ``content_hash`` joined: one key for a (document, text) pair."""
    if not table.num_rows:
        return pa.array([], pa.string())
    keys = pc.binary_join_element_wise(table[C.DOC_ID], table[CONTENT_HASH], "\x1f")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def finish(staging: Path, run_id: str) -> None:
    """After the commit: delete the run's folder."""
    shutil.rmtree(staging / run_id, ignore_errors=True)


class StoreLock:
    """Exclusive lock for one run: ``flock`` on ``<staging>/.lock``.

    The kernel drops an flock when its process dies, however it dies, so a crashed
    run never leaves a stale lock behind; the file only records who holds it, for
    the error message. It keeps runs that share a staging area apart; runs on other
    machines writing one S3 table are kept apart by Delta's commit conflict check.
    """

    def __init__(self, staging: str | os.PathLike):
        self.path = Path(staging) / LOCK_FILE
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
        holder = {"pid": os.getpid(), "host": socket.gethostname()}
        holder["since"] = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

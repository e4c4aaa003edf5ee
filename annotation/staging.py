"""A reprocessing run's staging area, where every node reaches it: to-do input, run files, resume.

The area lives on the store's own filesystem by default (``<store>/_staging``: a
local folder, or a prefix of the store's bucket; delta-rs's ``vacuum`` leaves
``_``-prefixed folders alone), or at an explicit ``staging=`` URI on the same
filesystem. Every path goes through a pyarrow filesystem, so the driver that plans
and the workers that read and write see the same objects: no node's local disk is
in the data path. Layout::

    <run_id>/run.json           the run's model and settings: a crashed run is resumed
    <run_id>/in-<attempt>/      an attempt's to-do input (documents not yet annotated)
    <run_id>/out/*.parquet      the run's store rows, written by the pipeline's workers

Nothing here is visible to readers of the store: the run's files reach the table
in one commit (:mod:`annotation.commit`), after which the run's folder is deleted.
A run that crashes leaves its folder; the rerun reads what ``out/`` holds and
annotates only the rest. There is no lock (a lock on one node's disk means nothing
to another): a run in progress refreshes a heartbeat in its ``run.json``, so that
a run started beside it does not take it for a crashed run to resume but starts
one of its own; of two runs that overlap, the one that commits second is refused
by the table's conflict check and commits nothing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation.config import CONTENT_HASH, new_run_id
from corpora.writer import list_written
from ner import columns as C
from plumbing.atomic import write_json_atomic
from plumbing.config import ConfigError

RUN_STATE = "run.json"
OUT = "out"
HEARTBEAT_S = 20.0  # how often a run in progress says so
LIVE_S = 3 * HEARTBEAT_S  # a run silent this long has crashed (or its node is gone)
_KEYS = pa.schema([(C.DOC_ID, pa.string()), (CONTENT_HASH, pa.string())])


class Staging:
    """The staging area at ``root`` on ``fs``; ``location`` is its URI, for messages."""

    def __init__(self, fs: pafs.FileSystem, root: str, location: str = ""):
        self.fs, self.root = fs, root.rstrip("/")
        self.location = location or self.root

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def out_dir(self, run_id: str) -> str:
        return self.uri(run_id, OUT)

    def _runs(self) -> list[dict]:
        """The state of every uncommitted run folder (crashed, or in progress elsewhere)."""
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return []
        states = []
        for entry in self.fs.get_file_info(pafs.FileSelector(self.root)):
            if entry.type != pafs.FileType.Directory or entry.base_name.startswith((".", "_")):
                continue
            path = f"{entry.path}/{RUN_STATE}"
            try:
                with self.fs.open_input_stream(path) as stream:
                    states.append(json.loads(stream.read()) | {"folder": entry.base_name})
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # a folder without a state holds nothing to resume
        return states

    def choose_run_id(self, requested: str, committed: dict[str, int]) -> tuple[str, bool]:
        """The run's id and whether it resumes a crashed run (one not committed).

        A staging folder of a run that is committed (it crashed after its commit) is
        deleted here.
        """
        crashed, live = [], set()
        for state in self._runs():
            if state["folder"] in committed:
                self.finish(state["folder"])
            elif _alive(state):
                live.add(state["folder"])
            else:
                crashed.append((state.get("updated_at", ""), state["folder"]))
        if requested:
            if requested in committed:
                raise ConfigError(
                    f"run {requested} is already committed (table version "
                    f"{committed[requested]}); pick a new run_id"
                )
            if requested in live:
                raise RunInProgressError(
                    f"run {requested} is in progress elsewhere (its heartbeat in "
                    f"{self.uri(requested, RUN_STATE)} is younger than {LIVE_S:g} s)"
                )
            return requested, any(folder == requested for _, folder in crashed)
        if crashed:
            return max(crashed)[1], True
        return new_run_id(), False

    def open_run(self, run_id: str, fingerprint: str, settings_fp: str) -> str:
        """Create or reopen the run's folder; returns this attempt's own to-do folder.

        A crashed attempt's output is kept only if it used the same model and settings.
        """
        state_path = self.uri(run_id, RUN_STATE)
        state = {"run_id": run_id, "attempts": 0}
        if self.fs.get_file_info(state_path).type == pafs.FileType.File:
            with self.fs.open_input_stream(state_path) as stream:
                state = json.loads(stream.read())
            if (state.get("model_fingerprint"), state.get("settings_fingerprint")) != (
                fingerprint,
                settings_fp,
            ):
                print(
                    f"run {run_id}: model or settings differ from its crashed attempt; starting over"
                )
                self._delete(self.out_dir(run_id))
                state["attempts"] = 0
        else:
            self._delete(self.out_dir(run_id))  # data without a run state: nothing to trust
        state.update(
            model_fingerprint=fingerprint,
            settings_fingerprint=settings_fp,
            attempts=state.get("attempts", 0) + 1,
            updated_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            heartbeat=time.time(),
            owner={"host": socket.gethostname(), "pid": os.getpid()},
        )
        write_json_atomic(state_path, state, self.fs)
        self.fs.create_dir(self.out_dir(run_id), recursive=True)
        # Each attempt stages its input in a folder of its own: an attempt that
        # overlaps another (two runs started at once resume one crashed run) never
        # deletes or overwrites the input the other is reading.
        return self.uri(run_id, f"in-{state['attempts']:03d}-{uuid.uuid4().hex[:8]}")

    def written(self, run_id: str) -> list[str]:
        """The run's files in ``out/`` (from every attempt)."""
        return list_written(self.fs, self.out_dir(run_id))

    def already_written(self, run_id: str) -> pa.Table:
        """``doc_id, content_hash`` and ``file`` of every row an earlier attempt wrote."""
        parts = []
        for path in self.written(run_id):
            keys = pq.read_table(path, columns=[C.DOC_ID, CONTENT_HASH], filesystem=self.fs)
            keys = keys.cast(_KEYS)
            parts.append(keys.append_column("file", pa.repeat(pa.scalar(path), keys.num_rows)))
        if not parts:
            return _KEYS.empty_table().append_column("file", pa.array([], pa.string()))
        return pa.concat_tables(parts)

    def keep_needed(self, run_id: str, written: pa.Table, needed: pa.Table) -> pa.Table:
        """Delete the run's files holding a row the plan no longer needs, or a repeat.

        A file is kept whole or deleted whole (its rows are then annotated again), so
        that the files left can be committed as they are: a document whose text
        changed since the crashed attempt, or one that two overlapping attempts both
        wrote, must not reach the table twice. Returns the rows of the files kept.
        """
        if not written.num_rows:
            return written
        unneeded = pc.invert(pc.is_in(pair_keys(written), value_set=pair_keys(needed)))
        index = pa.table({C.DOC_ID: written[C.DOC_ID], "i": pa.array(range(written.num_rows))})
        first = index.group_by(C.DOC_ID, use_threads=False).aggregate([("i", "min")])["i_min"]
        repeat = pc.invert(pc.is_in(index["i"], value_set=first.combine_chunks()))
        bad = pc.unique(written["file"].filter(pc.or_(unneeded, repeat)))
        for path in bad.to_pylist():
            self.fs.delete_file(path)
        return written.filter(pc.invert(pc.is_in(written["file"], value_set=bad)))

    def finish(self, run_id: str) -> None:
        """After the commit: delete the run's folder."""
        self._delete(self.uri(run_id))

    def _delete(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)


def _alive(state: dict) -> bool:
    """Is the run of this state in progress? A fresh heartbeat, from a process not known dead.

    On the machine that ran it, a dead process says so at once (a killed run is
    resumed without waiting); from elsewhere, only the heartbeat's age can tell.
    """
    if time.time() - state.get("heartbeat", 0) >= LIVE_S:
        return False
    owner = state.get("owner") or {}
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class RunInProgressError(RuntimeError):
    """The requested run is being run elsewhere right now."""


class Heartbeat:
    """While a run is in progress, rewrite its ``run.json`` heartbeat every ``HEARTBEAT_S``."""

    def __init__(self, staging: Staging, run_id: str, interval_s: float = HEARTBEAT_S):
        self.path = staging.uri(run_id, RUN_STATE)
        self.fs, self.interval_s = staging.fs, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)

    def _set(self, heartbeat: float) -> None:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                state = json.loads(stream.read())
            write_json_atomic(self.path, state | {"heartbeat": heartbeat}, self.fs)
        except (OSError, json.JSONDecodeError):
            pass  # the commit removed the folder, or a write failed: the next beat retries

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._set(time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._set(0)  # stopped (failed in this process): resumable at once


def pair_keys(table: pa.Table) -> pa.Array:
    """``doc_id`` and ``content_hash`` joined: one key for a (document, text) pair."""
    if not table.num_rows:
        return pa.array([], pa.string())
    keys = pc.binary_join_element_wise(table[C.DOC_ID], table[CONTENT_HASH], "\x1f")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys

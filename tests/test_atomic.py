"""The atomic-write helper: a target is the old file or the whole new one, never a part."""

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from plumbing import atomic
from plumbing.atomic import atomic_write, write_json_atomic, write_parquet_atomic


class _Crash(RuntimeError):
    pass


def test_writes_and_replaces_leaving_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"n": 1})
    write_json_atomic(target, {"n": 2})
    assert json.loads(target.read_text()) == {"n": 2}
    assert os.listdir(target.parent) == ["state.json"]


def test_a_crash_between_the_temporary_write_and_the_rename_keeps_the_old_file(
    tmp_path, monkeypatch
):
    target = tmp_path / "data.parquet"
    write_parquet_atomic(pa.table({"x": [1]}), target)

    def crash(*args):
        raise _Crash("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(_Crash):
        write_parquet_atomic(pa.table({"x": [2, 3]}), target)
    assert pq.read_table(target).column("x").to_pylist() == [1]
    assert os.listdir(tmp_path) == ["data.parquet"]  # the temporary file is gone too


def test_a_writer_failing_half_way_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic.write_bytes_atomic(target, b"old")

    def half(stream):
        stream.write(b"new but not")
        raise _Crash("writer failed")

    with pytest.raises(_Crash):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"


def test_the_file_and_its_directory_are_fsynced_before_returning(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    target = tmp_path / "m.json"
    write_json_atomic(target, {})
    # The data (under its temporary name) first, then the directory holding the rename.
    assert len(synced) == 2
    assert os.path.dirname(synced[0]) == str(tmp_path) and ".tmp-" in synced[0]
    assert synced[1] == str(tmp_path)


def test_pyarrow_filesystems_get_a_temporary_name_then_a_move(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    atomic.write_bytes_atomic("dir/a.txt", b"one", fs)

    def half(stream):
        stream.write(b"partial")
        raise _Crash("writer failed")

    with pytest.raises(_Crash):
        atomic_write("dir/a.txt", half, fs)
    with fs.open_input_stream("dir/a.txt") as stream:
        assert stream.read() == b"one"

"""The one atomic-write helper: a file appears under its name whole, or not at all.

Guarantee, by filesystem:

- Local (a path, or ``pyarrow.fs.LocalFileSystem``): the bytes go to a temporary
  file in the target's directory, are flushed and ``fsync``-ed, the file is renamed
  over the target (``os.replace``, atomic on POSIX), and the directory is
  ``fsync``-ed. A reader sees the old file or the new one; after the function
  returns, the new one survives a power cut. A crash before the rename leaves the
  old file and, at worst, a ``.tmp-*`` file that callers may delete.
- Any other ``pyarrow.fs`` filesystem (S3, GCS, HDFS, fsspec): the bytes go to a
  temporary name in the same directory, which is then moved onto the target. A
  reader never sees a partial file under the target's name (object stores publish
  an object whole); durability is the store's own. On object stores a move is a
  copy and a delete, so a crash between them can leave the ``.tmp-*`` object too.

Temporary files are named ``.tmp-*`` so listings can skip them (see
:func:`corpora.writer.list_written`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TEMPORARY_PREFIX = ".tmp-"


def _temporary_name(parent: str, name: str) -> str:
    return f"{parent}/{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}-{name}"


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[bytes]], None],
    filesystem: pafs.FileSystem | None = None,
) -> str:
    """Call ``write(stream)`` for a temporary file, then publish it as ``path``; returns ``path``.

    ``filesystem`` None or local: the local guarantee above; else the pyarrow one.
    Parent directories are created.
    """
    path = str(path)
    parent, name = path.rsplit("/", 1) if "/" in path else (".", path)
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        os.makedirs(parent, exist_ok=True)
        temporary = _temporary_name(parent, name)
        try:
            with open(temporary, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(parent)
        return path
    filesystem.create_dir(parent, recursive=True)
    temporary = _temporary_name(parent, name)
    with filesystem.open_output_stream(temporary) as stream:
        write(stream)
    filesystem.move(temporary, path)
    return path


def write_bytes_atomic(
    path: str | os.PathLike, data: bytes, filesystem: pafs.FileSystem | None = None
) -> str:
    return atomic_write(path, lambda stream: stream.write(data), filesystem)


def write_json_atomic(
    path: str | os.PathLike, payload: dict, filesystem: pafs.FileSystem | None = None
) -> str:
    """``payload`` as indented JSON (values it cannot encode as ``str``)."""
    data = json.dumps(payload, indent=2, default=str).encode()
    return write_bytes_atomic(path, data, filesystem)


def write_parquet_atomic(
    table: pa.Table,
    path: str | os.PathLike,
    filesystem: pafs.FileSystem | None = None,
    compression: str = "zstd",
) -> str:
    return atomic_write(
        path, lambda stream: pq.write_table(table, stream, compression=compression), filesystem
    )


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make a rename or link in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

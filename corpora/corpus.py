"""Finding and checking the input Parquet files, before any model work.

Inputs are files or directories, local or any URI that pyarrow understands
(``s3://``, ``gs://``, ``hdfs://``, ``file://``) or, failing that, fsspec
(``memory://``, ``az://``, ...). Every file's footer is read up front: an
unreadable file, or one without the id or a text column, stops the job with the
file and column named, before a model is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class InputError(ValueError):
    """Input that cannot be annotated at all: a missing file or column, an unreadable file."""


class SkippedInputWarning(UserWarning):
    """Files in an input directory that are not read (not ``.parquet``), named so none is lost unseen."""


@dataclass(frozen=True)
class InputFile:
    path: str  # as the filesystem names it (no scheme)
    num_rows: int


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path within it, for a local path or a URI."""
    if "://" not in uri:
        local = pafs.LocalFileSystem()
        return local, str(_absolute(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as arrow_error:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with ray[data]
            raise InputError(f"{uri}: {arrow_error}") from arrow_error
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ValueError, ImportError) as err:
            raise InputError(f"{uri}: no filesystem for this URI ({err})") from err
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _absolute(path: str) -> str:
    from pathlib import Path

    return str(Path(path).expanduser().resolve())


def expand_inputs(
    paths: Sequence[str] | str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, list[str]]:
    """All Parquet files under the given files and directories, sorted, without repeats.

    Hidden and bookkeeping files (``.x``, ``_x``, such as ``_SUCCESS``) are skipped
    in directories. All inputs must live on one filesystem: ``filesystem``, with
    ``paths`` in it, when the URIs alone do not say how to reach it.
    """
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise InputError("no input given: set input to a Parquet file, directory or URI")
    given = filesystem
    files: list[str] = []
    for uri in paths:
        fs, path = (given, uri) if given is not None else resolve_filesystem(uri)
        if filesystem is None:
            filesystem = fs
        elif fs.type_name != filesystem.type_name:
            raise InputError(
                f"{uri}: all inputs must be on one filesystem ({filesystem.type_name})"
            )
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input {uri} does not exist")
        if info.type == pafs.FileType.Directory:
            found, other = [], []
            for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
                if entry.type != pafs.FileType.File:
                    continue
                if any(p.startswith((".", "_")) for p in _relative_parts(entry.path, path)):
                    continue  # hidden and bookkeeping files (_SUCCESS, .crc) are expected
                (found if entry.path.endswith(".parquet") else other).append(entry.path)
            if not found:
                raise InputError(
                    f"input directory {uri} holds no .parquet files"
                    + (f" (it holds {_sample(other)})" if other else "")
                )
            if other:
                warnings.warn(
                    f"input directory {uri}: {len(other)} file(s) without the .parquet "
                    f"suffix are not read: {_sample(other)}",
                    SkippedInputWarning,
                    stacklevel=2,
                )
            files.extend(sorted(found))
        else:
            files.append(path)
    unique = list(dict.fromkeys(files))  # an input named twice is read once
    return filesystem, unique


def _sample(paths: list[str], limit: int = 5) -> str:
    names = ", ".join(sorted(paths)[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _relative_parts(path: str, root: str) -> list[str]:
    return path[len(root) :].strip("/").split("/")


def inspect_file(
    fs: pafs.FileSystem,
    path: str,
    id_column: str,
    text_columns: Sequence[str],
    others: Sequence[str],
) -> InputFile:
    """Read one footer: the file must open and hold the id, text and pass-through columns."""
    try:
        with fs.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
            schema = metadata.schema.to_arrow_schema()
    except Exception as err:
        raise InputError(f"input file {path} is not readable Parquet: {err}") from err
    for role, names in (("id", [id_column]), ("text", text_columns), ("pass-through", others)):
        for name in names:
            if name not in schema.names:
                raise InputError(
                    f"input file {path} has no {role} column {name!r}; "
                    f"its columns are {', '.join(schema.names)}"
                )
    for name in text_columns:
        kind = schema.field(name).type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_null(kind)
        ):
            raise InputError(
                f"input file {path}: text column {name!r} has type {kind}, expected a string"
            )
    return InputFile(path, metadata.num_rows)


def validate_inputs(
    fs: pafs.FileSystem,
    files: Sequence[str],
    id_column: str,
    text_columns: Sequence[str],
    passthrough: Sequence[str] = (),
    threads: int = 16,
) -> list[InputFile]:
    """Footers of all files, read in parallel; the first problem found is raised."""
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        return list(
            pool.map(
                lambda path: inspect_file(fs, path, id_column, text_columns, passthrough), files
            )
        )

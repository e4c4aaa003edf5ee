"""What the file-to-Parquet converters (:mod:`annotation.pubmed`, :mod:`annotation.pmc`) share.

Listing the input files (one shard stem each, so a retried task replaces its own
files), one Ray Data task per file (a :class:`FileStage`), rows written a row
group at a time, and ``_report.json`` written last (:class:`ConversionSummary`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from annotation.cluster import init_ray
from corpora.corpus import InputError, resolve_filesystem
from corpora.writer import safe_stem
from ner import columns as C
from plumbing.atomic import write_json_atomic
from plumbing.config import ConfigError, JobConfig

REPORT = "_report.json"


class ConversionConfig(JobConfig):
    """Keys every converter has; a subclass describes the first three and names its ``inputs``."""

    inputs: ClassVar[str]  # "input must name at least one {inputs} or directory"

    input: list[str]
    output: str
    row_group_rows: int
    task_num_cpus: float = Field(
        1.0, description="CPUs reserved per file task (parsing is CPU-bound)", gt=0
    )
    concurrency: int = Field(
        0, description="files converted at once at most; 0 = as the cluster's CPUs allow", ge=0
    )
    ray_address: str = Field(
        "", description="Ray cluster address; empty = RAY_ADDRESS or a new local cluster"
    )
    num_cpus: int = Field(0, description="CPUs of a new local cluster (0 = all)")
    dashboard: bool = Field(True, description="start Ray's dashboard with a new local cluster")
    progress_bars: bool = Field(True, description="show Ray Data's progress bars")
    verbose: bool = Field(False, description="show Ray's own log lines on the console")

    @model_validator(mode="after")  # also when `input` is left at its default
    def _some_input(self) -> ConversionConfig:
        if not self.input:
            raise ConfigError(f"input must name at least one {self.inputs} or directory")
        return self


def input_stem(path: str, suffixes: Sequence[str]) -> str:
    """The file's name without the first of ``suffixes`` it ends with, in safe characters."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_stem(name)


def list_input_files(
    inputs: Sequence[str], suffixes: tuple[str, ...], stem: Callable[[str], str], kinds: str
) -> tuple[pafs.FileSystem, list[str]]:
    """Files named, and files ending in ``suffixes`` in directories named; stems must be unique.

    ``kinds`` names the suffixes in the error raised when nothing is found.
    """
    found: list[str] = []
    filesystem = None
    for item in inputs:
        fs, path = resolve_filesystem(item)
        if filesystem is not None and fs.type_name != filesystem.type_name:
            raise InputError("all inputs must be on one filesystem")
        filesystem = fs
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            found.extend(e.path for e in entries if e.is_file and e.path.endswith(suffixes))
        elif info.type == pafs.FileType.File:
            found.append(path)
        else:
            raise InputError(f"{item}: no such file or directory")
    found = sorted(set(found))
    stems: dict[str, str] = {}
    for path in found:
        if stem(path) in stems:
            raise InputError(f"{stems[stem(path)]} and {path} would write the same shard")
        stems[stem(path)] = path
    if not found:
        raise InputError(f"no {kinds} files in {', '.join(inputs)}")
    return filesystem, found


def write_row_groups(stream, schema: pa.Schema, rows: Iterable[dict], row_group_rows: int) -> None:
    """Write ``rows`` as they come, ``row_group_rows`` at a time, so a task holds about that many."""
    group: list[dict] = []
    with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
        for row in rows:
            group.append(row)
            if len(group) >= row_group_rows:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))


def remove_files(fs: pafs.FileSystem, paths: Iterable[str]) -> None:
    """Delete those of ``paths`` that exist: an earlier run's shards of a file now found bad."""
    for path in paths:
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)


class FileStage:
    """A batch of input paths (column ``path``) -> one row of counts per file, shards written.

    Plain Python, no Ray: the job runs it in one task per file; tests call it directly.
    A subclass converts one file in ``convert`` and names its rows' ``report_schema``.
    """

    report_schema: ClassVar[pa.Schema]

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, ["path"], type(self).__name__)
        rows = [self.convert(path) for path in table.column("path").to_pylist()]
        return pa.Table.from_pylist(rows, schema=self.report_schema)


@dataclass
class ConversionSummary:
    """The run's counts, printed and written to ``_report.json``; ``totals`` names the counts."""

    totals: ClassVar[tuple[str, ...]]

    output: str
    files: list[dict] = field(default_factory=list)  # a FileReport row per file, by path
    wall_s: float = 0.0

    @property
    def bad_files(self) -> list[dict]:
        return [f for f in self.files if f["error"] is not None]

    def total(self, key: str) -> int:
        return sum(f[key] for f in self.files)

    def bad_file_lines(self) -> list[str]:
        return [f"BAD FILE {f['path']}: {f['error']}" for f in self.bad_files]

    def report(self, config: ConversionConfig) -> dict:
        """What ``_report.json`` holds."""
        return {
            "config": config.model_dump(),
            "totals": {k: self.total(k) for k in self.totals},
            "bad_files": [{"path": f["path"], "reason": f["error"]} for f in self.bad_files],
            "files": self.files,
        }


def run_conversion(
    config: ConversionConfig,
    stage: FileStage,
    list_files: Callable[[Sequence[str]], tuple[pafs.FileSystem, list[str]]],
    what: str,
    summary_type: type[ConversionSummary],
) -> ConversionSummary:
    """List the files, convert them on Ray Data with ``stage`` (one block and one task per
    file), write ``_report.json`` last. ``what`` names the files on the console."""
    started = time.perf_counter()
    filesystem, paths = list_files(config.input)
    scheme = "" if isinstance(filesystem, pafs.LocalFileSystem) else f"{filesystem.type_name}://"
    ray = init_ray(
        config.ray_address,
        config.num_cpus,
        dashboard=config.dashboard,
        verbose=config.verbose,
        progress_bars=config.progress_bars,
    )
    print(f"converting {len(paths):,} {what} file(s) -> {config.output}", flush=True)
    items = [{"path": scheme + path} for path in paths]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        stage,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=config.task_num_cpus,
        concurrency=config.concurrency or None,
    )
    rows = dataset.take_all()
    summary = summary_type(output=config.output, files=sorted(rows, key=lambda r: r["path"]))
    summary.wall_s = time.perf_counter() - started
    out_fs, root = resolve_filesystem(config.output)
    write_json_atomic(f"{root}/{REPORT}", summary.report(config), out_fs)
    return summary

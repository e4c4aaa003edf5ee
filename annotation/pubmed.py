"""PubMed XML files -> Parquet citations (the annotation job's input), on Ray Data.

One Ray Data task per input file (``map_batches`` with ``batch_size=1``): it
streams the file with :func:`corpora.pubmed_xml.iter_pubmed` and writes its rows as
they come, a row group at a time, so a task's memory does not grow with the
file. Output, under ``output``:

- ``citations/<stem>.parquet``: :data:`corpora.pubmed_xml.CITATION_SCHEMA` plus
  ``content_hash`` (of title and abstract, as :mod:`annotation.planning` compares
  them), input for ``jobs.annotate id_column=pmid text_columns=[title,abstract]``.
  The hash is computed here, while each record is in hand, so that a daily
  reprocessing run reads ids and hashes, not every abstract, to find what changed;
- ``deletions/<stem>.parquet``: :data:`corpora.pubmed_xml.DELETION_SCHEMA` (written for
  every file, empty when the file deletes nothing);
- ``_report.json``, written last: the counts per file, and the bad files with reasons.

``<stem>`` is the input file's name without ``.xml``/``.xml.gz``, so a retried
task replaces its own files, and every file is written atomically
(:func:`plumbing.atomic.atomic_write`). A file that cannot be read to its end is a bad
file: its reason is recorded, the shards of an earlier run for it are removed (a
half-read file gives no rows at all), and the other files go on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from annotation.cluster import init_ray
from annotation.config import CONTENT_HASH
from annotation.hashing import HASHED_COLUMNS_KEY, content_hash
from corpora.corpus import InputError, resolve_filesystem
from corpora.pubmed_updates import CITATIONS_DIR, DELETIONS_DIR
from corpora.pubmed_xml import CITATION_SCHEMA, DELETION_SCHEMA, PubmedXmlError, iter_pubmed
from corpora.writer import safe_stem
from ner import columns as C
from plumbing.atomic import atomic_write, write_json_atomic
from plumbing.config import ConfigError, JobConfig

HASHED_COLUMNS = ["title", "abstract"]
FILE_SCHEMA = CITATION_SCHEMA.append(pa.field(CONTENT_HASH, pa.string(), nullable=False))
FILE_SCHEMA = FILE_SCHEMA.with_metadata({HASHED_COLUMNS_KEY: json.dumps(HASHED_COLUMNS)})
REPORT = "_report.json"
SUFFIXES = (".xml.gz", ".xml")


class PubmedToParquetConfig(JobConfig):
    """Settings of jobs.pubmed_to_parquet."""

    input: list[str] = Field(
        [], description="PubMed XML files (.xml, .xml.gz) or directories of them"
    )
    output: str = Field(
        "outputs/pubmed", description="output directory: citations/, deletions/, _report.json"
    )
    row_group_rows: int = Field(
        5000,
        description="citations per Parquet row group: a task holds about this many rows at once",
        ge=1,
    )
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
    def _some_input(self) -> PubmedToParquetConfig:
        if not self.input:
            raise ConfigError("input must name at least one PubMed XML file or directory")
        return self


def file_stem(path: str) -> str:
    """``.../pubmed24n0001.xml.gz`` -> ``pubmed24n0001`` (reduced to safe characters)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_stem(name)


def list_pubmed_files(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str]]:
    """Files named, and ``*.xml``/``*.xml.gz`` in directories named; stems must be unique."""
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
            found.extend(e.path for e in entries if e.is_file and e.path.endswith(SUFFIXES))
        elif info.type == pafs.FileType.File:
            found.append(path)
        else:
            raise InputError(f"{item}: no such file or directory")
    found = sorted(set(found))
    stems: dict[str, str] = {}
    for path in found:
        if file_stem(path) in stems:
            raise InputError(f"{stems[file_stem(path)]} and {path} would write the same shard")
        stems[file_stem(path)] = path
    if not found:
        raise InputError(f"no .xml or .xml.gz files in {', '.join(inputs)}")
    return filesystem, found


class PubmedFileStage:
    """A batch of input paths (column ``path``) -> one row of counts per file, shards written.

    Plain Python, no Ray: the job runs it in one task per file; tests call it directly.
    """

    def __init__(self, output: str, row_group_rows: int = 5000):
        self.output = output
        self.row_group_rows = row_group_rows

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, ["path"], "PubmedFileStage")
        rows = [self.convert(path) for path in table.column("path").to_pylist()]
        return pa.Table.from_pylist(rows, schema=REPORT_SCHEMA)

    def convert(self, path: str) -> dict:
        in_fs, in_path = resolve_filesystem(path)
        out_fs, root = resolve_filesystem(self.output)
        name = in_path.rstrip("/").rsplit("/", 1)[-1]
        stem = file_stem(in_path)
        citations_file = f"{root}/{CITATIONS_DIR}/{stem}.parquet"
        deletions_file = f"{root}/{DELETIONS_DIR}/{stem}.parquet"
        report = FileReport(path=in_path, source_file=name)
        deletions: list[dict] = []

        def write_citations(stream) -> None:
            rows: list[dict] = []
            with pq.ParquetWriter(stream, FILE_SCHEMA, compression="zstd") as writer:
                for record in iter_pubmed(in_path, in_fs, source_file=name):
                    if record.kind == "deletion":
                        deletions.append(record.row)
                        continue
                    row = record.row
                    row[CONTENT_HASH] = content_hash([row[name] for name in HASHED_COLUMNS])
                    rows.append(row)
                    report.citations += 1
                    report.without_abstract += record.row["abstract"] == ""
                    if len(rows) >= self.row_group_rows:
                        writer.write_table(pa.Table.from_pylist(rows, schema=FILE_SCHEMA))
                        rows = []
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=FILE_SCHEMA))

        try:
            atomic_write(citations_file, write_citations, out_fs)
        except PubmedXmlError as err:
            for stale in (citations_file, deletions_file):  # an earlier run's rows for this file
                if out_fs.get_file_info(stale).type == pafs.FileType.File:
                    out_fs.delete_file(stale)
            report.citations = report.without_abstract = 0
            report.error = err.reason
            return asdict(report)
        table = pa.Table.from_pylist(deletions, schema=DELETION_SCHEMA)
        atomic_write(deletions_file, lambda s: pq.write_table(table, s), out_fs)
        report.deletions = len(deletions)
        report.citations_file, report.deletions_file = citations_file, deletions_file
        return asdict(report)


@dataclass
class FileReport:
    """What happened to one input file; ``error`` is None for a file read to its end."""

    path: str
    source_file: str
    citations: int = 0
    without_abstract: int = 0
    deletions: int = 0
    error: str | None = None
    citations_file: str | None = None
    deletions_file: str | None = None


REPORT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("source_file", pa.string()),
        ("citations", pa.int64()),
        ("without_abstract", pa.int64()),
        ("deletions", pa.int64()),
        ("error", pa.string()),
        ("citations_file", pa.string()),
        ("deletions_file", pa.string()),
    ]
)


@dataclass
class PubmedSummary:
    """The run's counts, printed and written to ``_report.json``."""

    output: str
    files: list[dict] = field(default_factory=list)  # FileReport rows, by path
    wall_s: float = 0.0

    @property
    def bad_files(self) -> list[dict]:
        return [f for f in self.files if f["error"] is not None]

    def total(self, key: str) -> int:
        return sum(f[key] for f in self.files)

    def format(self) -> str:
        lines = [
            f"files read {len(self.files) - len(self.bad_files):,} of {len(self.files):,}; "
            f"citations {self.total('citations'):,} ({self.total('without_abstract'):,} without "
            f"an abstract); deletions {self.total('deletions'):,}; wall {self.wall_s:.1f} s",
            f"citations -> {self.output}/{CITATIONS_DIR}/ (jobs.annotate input: "
            "id_column=pmid text_columns=[title,abstract]); "
            f"deletions -> {self.output}/{DELETIONS_DIR}/",
        ]
        lines += [f"BAD FILE {f['path']}: {f['error']}" for f in self.bad_files]
        return "\n".join(lines)


def build_pubmed_dataset(config: PubmedToParquetConfig, files: list[str]):
    """The Ray Data plan: one block and one task per file; rows out are :class:`FileReport` s."""
    import ray

    items = [{"path": path} for path in files]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(
        PubmedFileStage(config.output, config.row_group_rows),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=config.task_num_cpus,
        concurrency=config.concurrency or None,
    )


def run_pubmed_to_parquet(config: PubmedToParquetConfig) -> PubmedSummary:
    """List the files, convert them on Ray Data, write ``_report.json`` last."""
    started = time.perf_counter()
    filesystem, files = list_pubmed_files(config.input)
    scheme = "" if isinstance(filesystem, pafs.LocalFileSystem) else f"{filesystem.type_name}://"
    init_ray(
        config.ray_address,
        config.num_cpus,
        dashboard=config.dashboard,
        verbose=config.verbose,
        progress_bars=config.progress_bars,
    )
    print(f"converting {len(files):,} PubMed XML file(s) -> {config.output}", flush=True)
    rows = build_pubmed_dataset(config, [scheme + path for path in files]).take_all()
    summary = PubmedSummary(output=config.output, files=sorted(rows, key=lambda r: r["path"]))
    summary.wall_s = time.perf_counter() - started
    out_fs, root = resolve_filesystem(config.output)
    report = {
        "config": config.model_dump(),
        "totals": {k: summary.total(k) for k in ("citations", "without_abstract", "deletions")},
        "bad_files": [{"path": f["path"], "reason": f["error"]} for f in summary.bad_files],
        "files": summary.files,
    }
    write_json_atomic(f"{root}/{REPORT}", report, out_fs)
    return summary

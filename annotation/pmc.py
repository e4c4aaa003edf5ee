"""PMC JATS full texts (``.nxml``, ``.tar.gz`` packages) -> Parquet articles, on Ray Data.

One Ray Data task per input file (``map_batches`` with ``batch_size=1``): it
streams the file with :func:`corpora.pmc.iter_pmc` (an archive member by member,
one article held at a time) and writes its rows as they come, a row group at a
time. Output, under ``output``:

- ``articles/<stem>.parquet``: :data:`corpora.pmc.ARTICLE_SCHEMA` plus
  ``content_hash`` (of ``text``, as :mod:`annotation.planning` compares it), input
  for ``jobs.annotate id_column=pmcid text_columns=[text]``;
- ``_report.json``, written last: the counts per file, the bad files and the bad
  articles with their reasons.

``<stem>`` is the input's name without ``.tar.gz``/``.tgz``/``.nxml``/``.xml``, so a
retried task replaces its own file, written atomically. A file that cannot be read
to its end (a plain file's bad XML, a truncated archive) is a bad file: its reason
is recorded and an earlier run's shard for it removed. A bad article inside an
archive (not XML, no PMCID) is recorded with its member's name and the rest of the
archive is converted. Either makes the job's exit code 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from annotation.cluster import init_ray
from annotation.config import CONTENT_HASH
from annotation.hashing import HASHED_COLUMNS_KEY, content_hash
from corpora.corpus import InputError, resolve_filesystem
from corpora.pmc import ARTICLE_SCHEMA, KEEP_CHOICES, PmcXmlError
from corpora.pmc_archive import ARCHIVE_SUFFIXES, XML_SUFFIXES, iter_pmc
from corpora.writer import safe_stem
from ner import columns as C
from plumbing.atomic import atomic_write, write_json_atomic
from plumbing.config import ConfigError, JobConfig

ARTICLES_DIR = "articles"
HASHED_COLUMNS = ["text"]
FILE_SCHEMA = ARTICLE_SCHEMA.append(pa.field(CONTENT_HASH, pa.string(), nullable=False))
FILE_SCHEMA = FILE_SCHEMA.with_metadata({HASHED_COLUMNS_KEY: json.dumps(HASHED_COLUMNS)})
REPORT = "_report.json"
SUFFIXES = (*ARCHIVE_SUFFIXES, *XML_SUFFIXES)


class PmcToParquetConfig(JobConfig):
    """Settings of jobs.pmc_to_parquet."""

    input: list[str] = Field(
        [],
        description="PMC JATS files (.nxml, .xml) or OA packages (.tar.gz, .tgz), or directories",
    )
    output: str = Field("outputs/pmc", description="output directory: articles/, _report.json")
    keep: list[Literal[KEEP_CHOICES]] = Field(
        [],
        description="parts left out by default to keep: references, formulas, footnotes",
    )
    row_group_rows: int = Field(
        500, description="articles per Parquet row group: a task holds about this many", ge=1
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
    def _some_input(self) -> PmcToParquetConfig:
        if not self.input:
            raise ConfigError("input must name at least one PMC file, archive or directory")
        return self


def file_stem(path: str) -> str:
    """``.../oa_comm_xml.PMC000xxxxxx.tar.gz`` -> ``oa_comm_xml.PMC000xxxxxx`` (safe characters)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_stem(name)


def list_pmc_files(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str]]:
    """Files named, and ``*.nxml``/``*.xml``/``*.tar.gz``/``*.tgz`` in directories; stems unique."""
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
        raise InputError(f"no .nxml, .xml, .tar.gz or .tgz files in {', '.join(inputs)}")
    return filesystem, found


@dataclass
class FileReport:
    """What happened to one input file; ``error`` is None for a file read to its end."""

    path: str
    source_file: str
    articles: int = 0
    without_body: int = 0
    without_pmid: int = 0
    skipped_members: int = 0  # archive members not named .nxml/.xml (images, PDFs)
    bad_articles: list[dict] = field(default_factory=list)  # {"member", "reason"}
    error: str | None = None
    articles_file: str | None = None


REPORT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("source_file", pa.string()),
        ("articles", pa.int64()),
        ("without_body", pa.int64()),
        ("without_pmid", pa.int64()),
        ("skipped_members", pa.int64()),
        ("bad_articles", pa.list_(pa.struct([("member", pa.string()), ("reason", pa.string())]))),
        ("error", pa.string()),
        ("articles_file", pa.string()),
    ]
)


class PmcFileStage:
    """A batch of input paths (column ``path``) -> one row of counts per file, shards written.

    Plain Python, no Ray: the job runs it in one task per file; tests call it directly.
    """

    def __init__(self, output: str, keep: Sequence[str] = (), row_group_rows: int = 500):
        self.output = output
        self.keep = frozenset(keep)
        self.row_group_rows = row_group_rows

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, ["path"], "PmcFileStage")
        rows = [self.convert(path) for path in table.column("path").to_pylist()]
        return pa.Table.from_pylist(rows, schema=REPORT_SCHEMA)

    def convert(self, path: str) -> dict:
        in_fs, in_path = resolve_filesystem(path)
        out_fs, root = resolve_filesystem(self.output)
        name = in_path.rstrip("/").rsplit("/", 1)[-1]
        articles_file = f"{root}/{ARTICLES_DIR}/{file_stem(in_path)}.parquet"
        report = FileReport(path=in_path, source_file=name)

        def write_articles(stream) -> None:
            rows: list[dict] = []
            with pq.ParquetWriter(stream, FILE_SCHEMA, compression="zstd") as writer:
                for item in iter_pmc(in_path, in_fs, self.keep):
                    if item.kind == "skipped":
                        report.skipped_members += 1
                        continue
                    if item.kind == "bad":
                        report.bad_articles.append({"member": item.member, "reason": item.reason})
                        continue
                    row = {**item.row, "source_file": name, "source_member": item.member}
                    row[CONTENT_HASH] = content_hash([row[c] for c in HASHED_COLUMNS])
                    rows.append(row)
                    report.articles += 1
                    report.without_body += not item.has_body
                    report.without_pmid += row["pmid"] is None
                    if len(rows) >= self.row_group_rows:
                        writer.write_table(pa.Table.from_pylist(rows, schema=FILE_SCHEMA))
                        rows = []
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=FILE_SCHEMA))

        try:
            atomic_write(articles_file, write_articles, out_fs)
        except PmcXmlError as err:
            if out_fs.get_file_info(articles_file).type == pafs.FileType.File:
                out_fs.delete_file(articles_file)  # an earlier run's rows for this file
            failed = FileReport(path=in_path, source_file=name, error=err.reason)
            return asdict(failed)
        report.articles_file = articles_file
        return asdict(report)


@dataclass
class PmcSummary:
    """The run's counts, printed and written to ``_report.json``."""

    output: str
    files: list[dict] = field(default_factory=list)  # FileReport rows, by path
    wall_s: float = 0.0

    @property
    def bad_files(self) -> list[dict]:
        return [f for f in self.files if f["error"] is not None]

    @property
    def bad_articles(self) -> list[dict]:
        """``{"path", "member", "reason"}`` of each bad article inside a file read to its end."""
        return [{"path": f["path"], **bad} for f in self.files for bad in f["bad_articles"]]

    def total(self, key: str) -> int:
        return sum(f[key] for f in self.files)

    def format(self) -> str:
        lines = [
            f"files read {len(self.files) - len(self.bad_files):,} of {len(self.files):,}; "
            f"articles {self.total('articles'):,} ({self.total('without_body'):,} without a "
            f"body, {self.total('without_pmid'):,} without a PMID); bad articles "
            f"{len(self.bad_articles):,}; archive members skipped (not .nxml/.xml) "
            f"{self.total('skipped_members'):,}; wall {self.wall_s:.1f} s",
            f"articles -> {self.output}/{ARTICLES_DIR}/ (jobs.annotate input: "
            "id_column=pmcid text_columns=[text])",
        ]
        lines += [f"BAD FILE {f['path']}: {f['error']}" for f in self.bad_files]
        lines += [
            f"BAD ARTICLE {b['path']} {b['member']}: {b['reason']}" for b in self.bad_articles
        ]
        return "\n".join(lines)


def build_pmc_dataset(config: PmcToParquetConfig, files: list[str]):
    """The Ray Data plan: one block and one task per file; rows out are :class:`FileReport` s."""
    import ray

    items = [{"path": path} for path in files]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(
        PmcFileStage(config.output, config.keep, config.row_group_rows),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=config.task_num_cpus,
        concurrency=config.concurrency or None,
    )


def run_pmc_to_parquet(config: PmcToParquetConfig) -> PmcSummary:
    """List the files, convert them on Ray Data, write ``_report.json`` last."""
    started = time.perf_counter()
    filesystem, files = list_pmc_files(config.input)
    scheme = "" if isinstance(filesystem, pafs.LocalFileSystem) else f"{filesystem.type_name}://"
    init_ray(
        config.ray_address,
        config.num_cpus,
        dashboard=config.dashboard,
        verbose=config.verbose,
        progress_bars=config.progress_bars,
    )
    print(f"converting {len(files):,} PMC file(s) -> {config.output}", flush=True)
    rows = build_pmc_dataset(config, [scheme + path for path in files]).take_all()
    summary = PmcSummary(output=config.output, files=sorted(rows, key=lambda r: r["path"]))
    summary.wall_s = time.perf_counter() - started
    out_fs, root = resolve_filesystem(config.output)
    keys = ("articles", "without_body", "without_pmid", "skipped_members")
    report = {
        "config": config.model_dump(),
        "totals": {k: summary.total(k) for k in keys},
        "bad_files": [{"path": f["path"], "reason": f["error"]} for f in summary.bad_files],
        "bad_articles": summary.bad_articles,
        "files": summary.files,
    }
    write_json_atomic(f"{root}/{REPORT}", report, out_fs)
    return summary

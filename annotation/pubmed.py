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
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field

from annotation.config import CONTENT_HASH
from annotation.conversion import (
    ConversionConfig,
    ConversionSummary,
    FileStage,
    input_stem,
    list_input_files,
    remove_files,
    run_conversion,
    write_row_groups,
)
from annotation.hashing import HASHED_COLUMNS_KEY, content_hash
from corpora.corpus import resolve_filesystem
from corpora.pubmed_updates import CITATIONS_DIR, DELETIONS_DIR
from corpora.pubmed_xml import CITATION_SCHEMA, DELETION_SCHEMA, PubmedXmlError, iter_pubmed
from plumbing.atomic import atomic_write

HASHED_COLUMNS = ["title", "abstract"]
FILE_SCHEMA = CITATION_SCHEMA.append(pa.field(CONTENT_HASH, pa.string(), nullable=False))
FILE_SCHEMA = FILE_SCHEMA.with_metadata({HASHED_COLUMNS_KEY: json.dumps(HASHED_COLUMNS)})
SUFFIXES = (".xml.gz", ".xml")


class PubmedToParquetConfig(ConversionConfig):
    """Settings of jobs.pubmed_to_parquet."""

    inputs = "PubMed XML file"

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


def file_stem(path: str) -> str:
    """``.../pubmed24n0001.xml.gz`` -> ``pubmed24n0001`` (reduced to safe characters)."""
    return input_stem(path, SUFFIXES)


def list_pubmed_files(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str]]:
    """Files named, and ``*.xml``/``*.xml.gz`` in directories named; stems must be unique."""
    return list_input_files(inputs, SUFFIXES, file_stem, ".xml or .xml.gz")


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


class PubmedFileStage(FileStage):
    """A batch of PubMed XML paths -> a :class:`FileReport` row per file, its shards written."""

    report_schema = REPORT_SCHEMA

    def __init__(self, output: str, row_group_rows: int = 5000):
        self.output = output
        self.row_group_rows = row_group_rows

    def convert(self, path: str) -> dict:
        in_fs, in_path = resolve_filesystem(path)
        out_fs, root = resolve_filesystem(self.output)
        name = in_path.rstrip("/").rsplit("/", 1)[-1]
        stem = file_stem(in_path)
        citations_file = f"{root}/{CITATIONS_DIR}/{stem}.parquet"
        deletions_file = f"{root}/{DELETIONS_DIR}/{stem}.parquet"
        report = FileReport(path=in_path, source_file=name)
        deletions: list[dict] = []

        def citations():
            for record in iter_pubmed(in_path, in_fs, source_file=name):
                if record.kind == "deletion":
                    deletions.append(record.row)
                    continue
                row = record.row
                row[CONTENT_HASH] = content_hash([row[name] for name in HASHED_COLUMNS])
                report.citations += 1
                report.without_abstract += record.row["abstract"] == ""
                yield row

        try:
            atomic_write(
                citations_file,
                lambda s: write_row_groups(s, FILE_SCHEMA, citations(), self.row_group_rows),
                out_fs,
            )
        except PubmedXmlError as err:
            remove_files(out_fs, (citations_file, deletions_file))  # an earlier run's rows
            return asdict(FileReport(path=in_path, source_file=name, error=err.reason))
        table = pa.Table.from_pylist(deletions, schema=DELETION_SCHEMA)
        atomic_write(deletions_file, lambda s: pq.write_table(table, s), out_fs)
        report.deletions = len(deletions)
        report.citations_file, report.deletions_file = citations_file, deletions_file
        return asdict(report)


class PubmedSummary(ConversionSummary):
    """The run's counts, printed and written to ``_report.json``."""

    totals = ("citations", "without_abstract", "deletions")

    def format(self) -> str:
        lines = [
            f"files read {len(self.files) - len(self.bad_files):,} of {len(self.files):,}; "
            f"citations {self.total('citations'):,} ({self.total('without_abstract'):,} without "
            f"an abstract); deletions {self.total('deletions'):,}; wall {self.wall_s:.1f} s",
            f"citations -> {self.output}/{CITATIONS_DIR}/ (jobs.annotate input: "
            "id_column=pmid text_columns=[title,abstract]); "
            f"deletions -> {self.output}/{DELETIONS_DIR}/",
        ]
        return "\n".join(lines + self.bad_file_lines())


def run_pubmed_to_parquet(config: PubmedToParquetConfig) -> PubmedSummary:
    """List the files, convert them on Ray Data, write ``_report.json`` last."""
    stage = PubmedFileStage(config.output, config.row_group_rows)
    return run_conversion(config, stage, list_pubmed_files, "PubMed XML", PubmedSummary)

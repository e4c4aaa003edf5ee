"""PMC JATS full texts (``.nxml``, ``.tar.gz`` packages) -> Parquet articles, on Ray Data.

One Ray Data task per input file (``map_batches`` with ``batch_size=1``): it
streams the file with :func:`corpora.pmc.iter_pmc` (an archive member by member,
one article held at a time) and writes its rows as they come, a row group at a
time. Output, under ``output``:

- ``articles/<stem>.parquet``: :data:`corpora.pmc.ARTICLE_SCHEMA` plus
  ``content_hash`` (of ``text``, as :mod:`annotation.planning` compares it), input
  for ``jobs.annotate id_column=pmcid text_columns=[text] passages_column=passages``;
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs
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
from corpora.pmc import ARTICLE_SCHEMA, KEEP_CHOICES, PmcXmlError
from corpora.pmc_archive import ARCHIVE_SUFFIXES, XML_SUFFIXES, iter_pmc
from plumbing.atomic import atomic_write

ARTICLES_DIR = "articles"
HASHED_COLUMNS = ["text"]
FILE_SCHEMA = ARTICLE_SCHEMA.append(pa.field(CONTENT_HASH, pa.string(), nullable=False))
FILE_SCHEMA = FILE_SCHEMA.with_metadata({HASHED_COLUMNS_KEY: json.dumps(HASHED_COLUMNS)})
SUFFIXES = (*ARCHIVE_SUFFIXES, *XML_SUFFIXES)


class PmcToParquetConfig(ConversionConfig):
    """Settings of jobs.pmc_to_parquet."""

    inputs = "PMC file, archive"

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


def file_stem(path: str) -> str:
    """``.../oa_comm_xml.PMC000xxxxxx.tar.gz`` -> ``oa_comm_xml.PMC000xxxxxx`` (safe characters)."""
    return input_stem(path, SUFFIXES)


def list_pmc_files(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str]]:
    """Files named, and ``*.nxml``/``*.xml``/``*.tar.gz``/``*.tgz`` in directories; stems unique."""
    return list_input_files(inputs, SUFFIXES, file_stem, ".nxml, .xml, .tar.gz or .tgz")


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


class PmcFileStage(FileStage):
    """A batch of PMC file or archive paths -> a :class:`FileReport` row per file, its shard written."""

    report_schema = REPORT_SCHEMA

    def __init__(self, output: str, keep: Sequence[str] = (), row_group_rows: int = 500):
        self.output = output
        self.keep = frozenset(keep)
        self.row_group_rows = row_group_rows

    def convert(self, path: str) -> dict:
        in_fs, in_path = resolve_filesystem(path)
        out_fs, root = resolve_filesystem(self.output)
        name = in_path.rstrip("/").rsplit("/", 1)[-1]
        articles_file = f"{root}/{ARTICLES_DIR}/{file_stem(in_path)}.parquet"
        report = FileReport(path=in_path, source_file=name)

        def articles():
            for item in iter_pmc(in_path, in_fs, self.keep):
                if item.kind == "skipped":
                    report.skipped_members += 1
                    continue
                if item.kind == "bad":
                    report.bad_articles.append({"member": item.member, "reason": item.reason})
                    continue
                row = {**item.row, "source_file": name, "source_member": item.member}
                row[CONTENT_HASH] = content_hash([row[c] for c in HASHED_COLUMNS])
                report.articles += 1
                report.without_body += not item.has_body
                report.without_pmid += row["pmid"] is None
                yield row

        try:
            atomic_write(
                articles_file,
                lambda s: write_row_groups(s, FILE_SCHEMA, articles(), self.row_group_rows),
                out_fs,
            )
        except PmcXmlError as err:
            remove_files(out_fs, [articles_file])  # an earlier run's rows for this file
            return asdict(FileReport(path=in_path, source_file=name, error=err.reason))
        report.articles_file = articles_file
        return asdict(report)


class PmcSummary(ConversionSummary):
    """The run's counts, printed and written to ``_report.json``."""

    totals = ("articles", "without_body", "without_pmid", "skipped_members")

    @property
    def bad_articles(self) -> list[dict]:
        """``{"path", "member", "reason"}`` of each bad article inside a file read to its end."""
        return [{"path": f["path"], **bad} for f in self.files for bad in f["bad_articles"]]

    def format(self) -> str:
        lines = [
            f"files read {len(self.files) - len(self.bad_files):,} of {len(self.files):,}; "
            f"articles {self.total('articles'):,} ({self.total('without_body'):,} without a "
            f"body, {self.total('without_pmid'):,} without a PMID); bad articles "
            f"{len(self.bad_articles):,}; archive members skipped (not .nxml/.xml) "
            f"{self.total('skipped_members'):,}; wall {self.wall_s:.1f} s",
            f"articles -> {self.output}/{ARTICLES_DIR}/ (jobs.annotate input: "
            "id_column=pmcid text_columns=[text] passages_column=passages)",
            *self.bad_file_lines(),
        ]
        lines += [
            f"BAD ARTICLE {b['path']} {b['member']}: {b['reason']}" for b in self.bad_articles
        ]
        return "\n".join(lines)

    def report(self, config: PmcToParquetConfig) -> dict:
        report = super().report(config)
        files = report.pop("files")  # bad articles before the files, as the report always had
        return {**report, "bad_articles": self.bad_articles, "files": files}


def run_pmc_to_parquet(config: PmcToParquetConfig) -> PmcSummary:
    """List the files, convert them on Ray Data, write ``_report.json`` last."""
    stage = PmcFileStage(config.output, config.keep, config.row_group_rows)
    return run_conversion(config, stage, list_pmc_files, "PMC", PmcSummary)

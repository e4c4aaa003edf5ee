"""PubTator files (title and abstract lines per PMID) as documents, and as Parquet input.

Gold mention lines are ignored. Used by jobs.pubtator_to_parquet and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from plumbing.config import JobConfig

SEPARATOR = " "  # between title and abstract: PubTator's offsets run over both


class PubtatorToParquetConfig(JobConfig):
    """Settings of jobs.pubtator_to_parquet."""

    pubtator: str = Field(description="PubTator file (title and abstract lines per PMID)")
    out_dir: str = Field(description="output directory for the Parquet files")
    files: int = Field(1, description="number of Parquet files", ge=1)
    copies: int = Field(1, description="repeat the corpus this many times", ge=1)


@dataclass
class TitledDocument:
    """A title and an abstract whose offsets run over ``title + " " + abstract``, and mentions.

    Gold corpora (:mod:`corpora.gold`) and exports (:mod:`corpora.export`) both hold their
    documents so; the mentions are theirs to define.
    """

    doc_id: str
    title: str
    abstract: str
    mentions: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.title + SEPARATOR + self.abstract


def read_pubtator(path: str | Path) -> list[dict[str, str]]:
    """Documents as ``{"pmid", "title", "abstract"}`` in file order."""
    documents: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            for kind in ("t", "a"):
                marker = f"|{kind}|"
                pmid, found, text = line.partition(marker)
                if found and pmid.isdigit():
                    doc = documents.setdefault(pmid, {"pmid": pmid, "title": "", "abstract": ""})
                    doc["title" if kind == "t" else "abstract"] = text
                    break
    return list(documents.values())


def write_parquet(
    documents: list[dict[str, str]], out_dir: str | Path, files: int = 1, copies: int = 1
) -> list[Path]:
    """Split ``documents`` (times ``copies``) into ``files`` Parquet files named part-00000.parquet..."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = (
        documents
        if copies == 1
        else [{**d, "pmid": f"{d['pmid']}-{k}"} for k in range(1, copies + 1) for d in documents]
    )
    files = max(1, min(files, len(rows)))
    size = -(-len(rows) // files)
    paths = []
    for index in range(files):
        chunk = rows[index * size : (index + 1) * size]
        table = pa.Table.from_pylist(
            chunk,
            schema=pa.schema(
                [("pmid", pa.string()), ("title", pa.string()), ("abstract", pa.string())]
            ),
        )
        path = out_dir / f"part-{index:05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths

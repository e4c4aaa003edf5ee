"""Convert a PubTator file (title and abstract lines per PMID) into Parquet for annotation.

python -m jobs.pubtator_to_parquet PUBTATOR_FILE OUT_DIR [--files N] [--copies K]

Writes columns ``pmid`` (string), ``title``, ``abstract`` into ``N`` files (the
documents split evenly). ``--copies K`` repeats the corpus K times with pmids
suffixed ``-1`` .. ``-K``, for throughput benchmarks on a larger corpus with unique ids.
Gold mention lines are ignored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.pubtator_to_parquet", description=__doc__)
    parser.add_argument("pubtator")
    parser.add_argument("out_dir")
    parser.add_argument("--files", type=int, default=1, help="number of Parquet files")
    parser.add_argument("--copies", type=int, default=1, help="repeat the corpus this many times")
    args = parser.parse_args(argv)
    documents = read_pubtator(args.pubtator)
    paths = write_parquet(documents, args.out_dir, args.files, args.copies)
    print(f"{len(documents) * args.copies:,} documents -> {len(paths)} file(s) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

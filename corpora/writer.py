"""Writing stage: decoded documents -> Parquet files, plus one row of counts per file.

A file's name is derived from its input: the stem of the input file of its first
row and a hash of the rows' stable identities (Ray Data's ``row_hash``, from the
source path and row position, or else the source path and doc id). A retried task
writes the same rows under the same name, so it replaces its earlier attempt
instead of adding a duplicate. Each file is written by :func:`plumbing.atomic.atomic_write`
(temporary name, then moved into place), so a reader never sees half a file.

Rows with status ``rejected`` go to ``<output>/_rejected/`` with the reason;
every other row goes to ``<output>/``, zero-entity documents included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from corpora.corpus import resolve_filesystem
from ner import columns as C
from plumbing.atomic import TEMPORARY_PREFIX, atomic_write

ROW_HASH = C.ROW_HASH
REJECTED_DIR = "_rejected"
# Footer metadata of every written file: which run wrote it, with which model, which
# input rows (Ray Data row hashes) it holds, and their counts. A resumed run reads
# only footers to know what is done.
META_RUN_ID = "ner.run_id"
META_MODEL = "ner.model_fingerprint"
META_ROW_HASHES = "ner.row_hashes"
META_STATS = "ner.stats"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str, limit: int = 80) -> str:
    """A file name's last component without ``.parquet``, reduced to ``[A-Za-z0-9._-]``."""
    stem = _UNSAFE.sub("_", name.rstrip("/").rsplit("/", 1)[-1])
    return stem.removesuffix(".parquet")[:limit]


STATS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("rejected_file", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("rejected", pa.int64()),
        pa.field("tokens", pa.int64()),
        pa.field("bio_repairs", pa.int64()),
        pa.field("statuses", pa.string()),  # JSON {status: count}
        pa.field("entity_types", pa.string()),  # JSON {type: count}
    ]
)


def shard_name(table: pa.Table) -> str:
    """``<input stem>-<16 hex>``: the same rows always give the same name."""
    sources = (
        table.column(C.I_SOURCE).to_pylist()
        if C.I_SOURCE in table.column_names
        else [None] * table.num_rows
    )
    digest = hashlib.sha256()
    if ROW_HASH in table.column_names:
        for value in table.column(ROW_HASH).to_pylist():
            digest.update(f"{value}\n".encode())
    else:
        for source, doc_id in zip(sources, table.column(C.DOC_ID).to_pylist(), strict=True):
            digest.update(f"{source}\x00{doc_id}\n".encode())
    first = next((s for s in sources if s), "part")
    return f"{safe_stem(first) or 'part'}-{digest.hexdigest()[:16]}"


class ParquetShardWriter:
    """Writes one batch of decoded documents; returns one row of counts (:data:`STATS_SCHEMA`)."""

    def __init__(
        self,
        output: str,
        model_name: str,
        model_fingerprint: str,
        run_id: str,
        passthrough: tuple[str, ...] | list[str] = (),
        include_text: bool = False,
        compression: str = "zstd",
        rejected_columns: Sequence[str] = (),
        filesystem: pafs.FileSystem | None = None,
    ):
        # An explicit filesystem (built from a store's storage options) travels to
        # the workers with the writer; else the output URI resolves on each worker.
        if filesystem is not None:
            self.fs, self.root = filesystem, output.rstrip("/")
        else:
            self.fs, self.root = resolve_filesystem(output)
        self.model_name = model_name
        self.model_fingerprint = model_fingerprint
        self.run_id = run_id
        self.passthrough = list(passthrough)
        self.include_text = include_text
        self.compression = compression
        # Batch columns appended to rejected records after the standard ones; the
        # reprocessing job keeps each document's content hash there.
        self.rejected_columns = list(rejected_columns)

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(
            table,
            [C.DOC_ID, C.ENTITIES, C.STATUS, *self.passthrough, *self.rejected_columns],
            "ParquetShardWriter",
        )
        if self.include_text:
            C.require_columns(table, [C.I_TEXT], "ParquetShardWriter (include_text)")
        name = shard_name(table)
        rejected_mask = pc.equal(table.column(C.STATUS), C.STATUS_REJECTED)
        kept = table.filter(pc.invert(rejected_mask))
        rejected = table.filter(rejected_mask)

        written = rejected_file = None
        kept_stats, rejected_stats = self._part_stats(kept, False), self._part_stats(rejected, True)
        if kept.num_rows:
            written = self._write(
                self._output_table(kept), f"{self.root}/{name}.parquet", kept, kept_stats
            )
        if rejected.num_rows:
            rejected_file = self._write(
                self._rejected_table(rejected),
                f"{self.root}/{REJECTED_DIR}/{name}.parquet",
                rejected,
                rejected_stats,
            )
        return stats_row(written, rejected_file, merge_stats([kept_stats, rejected_stats]))

    @staticmethod
    def _part_stats(part: pa.Table, rejected: bool) -> dict:
        """Counts for the rows of one file, kept in its footer so a resumed run can sum them."""

        def total(column: str) -> int:
            if rejected or column not in part.column_names:
                return 0
            return int(pc.sum(part.column(column)).as_py() or 0)

        labels = (
            []
            if rejected
            else [e["label"] for row in part.column(C.ENTITIES).to_pylist() for e in row]
        )
        return {
            "rows": 0 if rejected else part.num_rows,
            "rejected": part.num_rows if rejected else 0,
            "tokens": total(C.I_N_TOKENS),
            "bio_repairs": total("_bio_repairs"),
            "statuses": dict(Counter(part.column(C.STATUS).to_pylist())),
            "entity_types": dict(Counter(labels)),
        }

    def _output_table(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        columns = {
            C.DOC_ID: table.column(C.DOC_ID).cast(pa.string()),
            C.ENTITIES: table.column(C.ENTITIES).cast(pa.list_(C.ENTITY_TYPE)),
            C.STATUS: table.column(C.STATUS),
        }
        fields = list(C.OUTPUT_HEAD)
        for name in self.passthrough:
            columns[name] = table.column(name)
            fields.append(pa.field(name, table.schema.field(name).type))
        if self.include_text:
            columns[C.TEXT] = table.column(C.I_TEXT)
            fields.append(pa.field(C.TEXT, pa.string()))
        now = datetime.now(UTC)
        columns[C.MODEL_NAME] = pa.array([self.model_name] * n, pa.string())
        columns[C.MODEL_FINGERPRINT] = pa.array([self.model_fingerprint] * n, pa.string())
        columns[C.RUN_ID] = pa.array([self.run_id] * n, pa.string())
        columns[C.ANNOTATED_AT] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
        fields.extend(C.PROVENANCE)
        return pa.table(columns, schema=pa.schema(fields))

    def _rejected_table(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        reason = (
            table.column(C.I_REASON)
            if C.I_REASON in table.column_names
            else pa.nulls(n, pa.string())
        )
        source = (
            table.column(C.I_SOURCE)
            if C.I_SOURCE in table.column_names
            else pa.nulls(n, pa.string())
        )
        columns = {
            C.DOC_ID: table.column(C.DOC_ID).cast(pa.string()),
            C.REASON: reason,
            C.SOURCE_FILE: source,
            C.RUN_ID: pa.array([self.run_id] * n, pa.string()),
        }
        fields = list(C.REJECTED_SCHEMA)
        for name in self.rejected_columns:
            columns[name] = table.column(name)
            fields.append(pa.field(name, table.schema.field(name).type))
        return pa.table(columns, schema=pa.schema(fields))

    def _write(self, table: pa.Table, path: str, source: pa.Table, stats: dict) -> str:
        """Write atomically, with the run, the rows' identities and their counts in the footer."""
        hashes = (
            source.column(ROW_HASH).to_numpy().astype("<u8").tobytes()
            if ROW_HASH in source.column_names
            else b""
        )
        table = table.replace_schema_metadata(
            {
                META_RUN_ID: self.run_id,
                META_MODEL: self.model_fingerprint,
                META_ROW_HASHES: base64.b64encode(hashes),
                META_STATS: json.dumps(stats, sort_keys=True),
            }
        )
        atomic_write(
            path,
            lambda stream: pq.write_table(table, stream, compression=self.compression),
            self.fs,
        )
        return path


def stats_row(file: str | None, rejected_file: str | None, stats: dict) -> pa.Table:
    """The one row a writer returns per batch (:data:`STATS_SCHEMA`)."""
    return pa.table(
        {
            "file": [file],
            "rejected_file": [rejected_file],
            **{k: [v] for k, v in stats.items() if k not in ("statuses", "entity_types")},
            "statuses": [json.dumps(stats["statuses"], sort_keys=True)],
            "entity_types": [json.dumps(stats["entity_types"], sort_keys=True)],
        },
        schema=STATS_SCHEMA,
    )


def merge_stats(parts: Sequence[dict]) -> dict:
    """Sum per-file counts (:meth:`ParquetShardWriter._part_stats`)."""
    merged = {"rows": 0, "rejected": 0, "tokens": 0, "bio_repairs": 0}
    statuses, entity_types = Counter(), Counter()
    for part in parts:
        for key in merged:
            merged[key] += part[key]
        statuses.update(part["statuses"])
        entity_types.update(part["entity_types"])
    return {**merged, "statuses": dict(statuses), "entity_types": dict(entity_types)}


@dataclass
class WrittenFile:
    """What a file's footer says about the rows in it."""

    path: str
    run_id: str | None
    model_fingerprint: str | None
    row_hashes: np.ndarray  # uint64; empty when the input had no row hashes
    stats: dict | None


def read_footer(fs: pafs.FileSystem, path: str) -> WrittenFile:
    """Read one output file's provenance from its footer only (no data pages)."""
    with fs.open_input_file(path) as handle:
        metadata = pq.read_schema(handle).metadata or {}
    hashes = base64.b64decode(metadata.get(META_ROW_HASHES.encode(), b""))
    stats = metadata.get(META_STATS.encode())
    run_id = metadata.get(META_RUN_ID.encode())
    model = metadata.get(META_MODEL.encode())
    return WrittenFile(
        path=path,
        run_id=run_id.decode() if run_id else None,
        model_fingerprint=model.decode() if model else None,
        row_hashes=np.frombuffer(hashes, dtype="<u8").astype(np.uint64),
        stats=json.loads(stats) if stats else None,
    )


def list_written(
    fs: pafs.FileSystem, root: str, temporary: bool = False, exclude_prefix: str = ""
) -> list[str]:
    """The one listing of written files: the Parquet files in ``root`` and ``root/_rejected``.

    Hidden and bookkeeping names (``.x``, ``_x``) are skipped, except temporary
    files (``.tmp-*``, left by a killed writer) when ``temporary`` is set; names
    starting with ``exclude_prefix`` are skipped too.
    """
    paths = []
    for folder in (root, f"{root}/{REJECTED_DIR}"):
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            continue
        for entry in fs.get_file_info(pafs.FileSelector(folder)):
            name = entry.path.rsplit("/", 1)[-1]
            hidden = name.startswith((".", "_")) or bool(
                exclude_prefix and name.startswith(exclude_prefix)
            )
            wanted = not hidden or (temporary and name.startswith(TEMPORARY_PREFIX))
            if entry.type == pafs.FileType.File and name.endswith(".parquet") and wanted:
                paths.append(entry.path)
    return sorted(paths)

"""Writing stage: decoded documents -> Parquet files, plus one row of counts per file.

A file's name is derived from its input: the stem of the input file of its first
row and a hash of the rows' stable identities (Ray Data's ``row_hash``, from the
source path and row position, or else the source path and doc id). A retried task
writes the same rows under the same name, so it replaces its earlier attempt
instead of adding a duplicate. Each file is written under a temporary name and
then moved into place, so a reader never sees half a file.

Rows with status ``rejected`` go to ``<output>/_rejected/`` with the reason;
every other row goes to ``<output>/``, zero-entity documents included.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ner import columns as C
from ner.corpus import resolve_filesystem

ROW_HASH = C.ROW_HASH
REJECTED_DIR = "_rejected"

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
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", first.rstrip("/").rsplit("/", 1)[-1])
    stem = stem.removesuffix(".parquet")[:80] or "part"
    return f"{stem}-{digest.hexdigest()[:16]}"


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
    ):
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
        status = table.column(C.STATUS)
        rejected_mask = pc.equal(status, C.STATUS_REJECTED)
        kept = table.filter(pc.invert(rejected_mask))
        rejected = table.filter(rejected_mask)

        written = rejected_file = None
        if kept.num_rows:
            written = self._write(self._output_table(kept), f"{self.root}/{name}.parquet")
        if rejected.num_rows:
            rejected_file = self._write(
                self._rejected_table(rejected), f"{self.root}/{REJECTED_DIR}/{name}.parquet"
            )
        entity_types = Counter(
            label
            for row in kept.column(C.ENTITIES).to_pylist()
            for label in (e["label"] for e in row)
        )
        tokens = (
            int(pc.sum(kept.column(C.I_N_TOKENS)).as_py() or 0)
            if C.I_N_TOKENS in kept.column_names
            else 0
        )
        repairs = (
            int(pc.sum(kept.column("_bio_repairs")).as_py() or 0)
            if "_bio_repairs" in kept.column_names
            else 0
        )
        stats = {
            "file": [written],
            "rejected_file": [rejected_file],
            "rows": [kept.num_rows],
            "rejected": [rejected.num_rows],
            "tokens": [tokens],
            "bio_repairs": [repairs],
            "statuses": [json.dumps(Counter(status.to_pylist()), sort_keys=True)],
            "entity_types": [json.dumps(entity_types, sort_keys=True)],
        }
        return pa.table(stats, schema=STATS_SCHEMA)

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

    def _write(self, table: pa.Table, path: str) -> str:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        temporary = f"{parent}/.tmp-{uuid.uuid4().hex}.parquet"
        with self.fs.open_output_stream(temporary) as stream:
            pq.write_table(table, stream, compression=self.compression)
        self.fs.move(temporary, path)
        return path

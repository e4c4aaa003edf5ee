"""Pipeline writer of a reprocessing run: each batch becomes one data file of the store's table.

The workers write the table's files themselves, in the table's schema, so the
run's commit moves and registers them (:func:`annotation.commit.commit_files`)
instead of gathering the rows in the driver. A file holds annotated and rejected
documents alike (status ``rejected``, a ``reason`` and the input file), sorted by
``doc_id``, so that each file covers a narrow id range and a later update
rewrites few files. Its name, footer and stats row are those of
:class:`corpora.writer.ParquetShardWriter`, so a retried task replaces its file and a
resumed run knows what is done.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from annotation import store
from corpora.writer import ParquetShardWriter, merge_stats, shard_name, stats_row
from ner import columns as C

_EXTRA_NAMES = {f.name for f in store.EXTRA}


class StoreShardWriter(ParquetShardWriter):
    """Writes one batch of decoded documents as store rows; returns one stats row."""

    def __init__(self, output: str, *, settings_fingerprint: str, **kwargs):
        super().__init__(output, **kwargs)
        self.settings_fingerprint = settings_fingerprint

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(
            table,
            [C.DOC_ID, C.ENTITIES, C.STATUS, store.CONTENT_HASH, *self.passthrough],
            "StoreShardWriter",
        )
        name = shard_name(table)
        rejected = pc.equal(table.column(C.STATUS), C.STATUS_REJECTED)
        rows = self.store_rows(table, rejected)
        stats = merge_stats(
            [
                self._part_stats(table.filter(pc.invert(rejected)), False),
                self._part_stats(table.filter(rejected), True),
            ]
        )
        return stats_row(
            self._write(rows, f"{self.root}/{name}.parquet", table, stats), None, stats
        )

    def store_rows(self, table: pa.Table, rejected: pa.Array) -> pa.Table:
        """The batch as the table's rows: one schema for every file of a run."""
        rows = self._output_table(table)
        n = table.num_rows
        no_entities = pa.array([[]] * n, rows.schema.field(C.ENTITIES).type)
        entities = pc.if_else(rejected, no_entities, rows.column(C.ENTITIES))
        rows = rows.set_column(rows.schema.get_field_index(C.ENTITIES), C.ENTITIES, entities)
        nulls = pa.nulls(n, pa.string())
        extra = {
            store.CONTENT_HASH: table.column(store.CONTENT_HASH).cast(pa.string()),
            store.SETTINGS_FINGERPRINT: pa.array([self.settings_fingerprint] * n, pa.string()),
            C.REASON: pc.if_else(rejected, _column(table, C.I_REASON, nulls), nulls),
            C.SOURCE_FILE: pc.if_else(rejected, _column(table, C.I_SOURCE, nulls), nulls),
        }
        fields = [
            pa.field(f.name, f.type, nullable=f.name != C.DOC_ID)
            for f in rows.schema
            if f.name not in _EXTRA_NAMES
        ]
        columns = [rows.column(f.name) for f in fields]
        for field in store.EXTRA:
            fields.append(field)
            columns.append(extra[field.name])
        return pa.table(columns, schema=pa.schema(fields)).sort_by(C.DOC_ID)


def _column(table: pa.Table, name: str, default: pa.Array):
    return table.column(name).cast(pa.string()) if name in table.column_names else default

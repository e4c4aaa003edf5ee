"""Hashes of the reprocessing store: document content, annotation settings, table digests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pyarrow as pa

# Schema metadata of a Parquet file that carries its own ``content_hash`` column: the
# JSON list of the text columns hashed, in order (see annotation.planning).
HASHED_COLUMNS_KEY = b"content_hash_columns"


def content_hash(values: Sequence[str | bytes | None]) -> str:
    """Hash of a document's text column values, in column order.

    Each value is length-prefixed and a null is marked, so moving text from one
    column to the next (which changes the spans' ``column``) changes the hash.
    """
    digest = hashlib.sha256()
    for value in values:
        if value is None:
            digest.update(b"N")
            continue
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        digest.update(b"S%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()[:32]


def settings_fingerprint(settings: dict) -> str:
    """Hash of the settings that shape the annotation rows (windows, columns, ...)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# --- comparing tables -------------------------------------------------------------
def table_digest(table: pa.Table, key: str = "doc_id") -> str:
    """sha256 of a table's content, independent of row order and file layout (vectorised).

    Rows are sorted by ``key`` and the columns serialised as one Arrow IPC stream
    (schema metadata dropped), so two stores with the same rows give the same digest.
    """
    ordered = table.sort_by(key).combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ordered.schema) as writer:
        writer.write_table(ordered)
    return hashlib.sha256(sink.getvalue()).hexdigest()

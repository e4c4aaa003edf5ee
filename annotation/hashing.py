"""Hashes of the reprocessing store: document content, annotation settings, table checksums."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import pyarrow as pa


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


# --- checksums ------------------------------------------------------------------
_MOD = 1 << 128


def table_checksum(table: pa.Table) -> int:
    """Order-independent checksum of a table's rows: the sum of per-row hashes mod 2**128.

    Summing lets a snapshot's checksum be the sum of its files' checksums, so a file
    shared with the previous snapshot needs no re-reading. Every column counts,
    provenance included (carried rows keep their original run_id and annotated_at).
    """
    total = 0
    for row in table.to_pylist():
        text = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
        total += int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    return total % _MOD


def combine_checksums(values: Iterable[int]) -> int:
    return sum(values) % _MOD


def format_checksum(value: int) -> str:
    return f"{value:032x}"

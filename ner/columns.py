"""Column names and Arrow schemas of the annotation job, in one place.

The stages pass one row per document from stage to stage. Columns starting with
``_`` are internal: they carry windows, offsets and predictions between stages
and never reach the output. Every stage checks the columns it needs with
:func:`require_columns`, so a miswired pipeline fails with the column's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

# --- output columns -------------------------------------------------------
DOC_ID = "doc_id"
ENTITIES = "entities"
STATUS = "status"
TEXT = "text"  # the joined text, written only with ``include_text``
MODEL_NAME = "model_name"
MODEL_FINGERPRINT = "model_fingerprint"
RUN_ID = "run_id"
ANNOTATED_AT = "annotated_at"
REASON = "reason"  # rejected records only
SOURCE_FILE = "source_file"  # rejected records only: the input file of the row

# --- status values ----------------------------------------------------------
STATUS_OK = "ok"
STATUS_EMPTY = "empty_text"  # null, empty or whitespace-only text
STATUS_NO_TOKENS = "no_tokens"  # visible text that the tokenizer turns into nothing
STATUS_REJECTED = "rejected"  # routed to _rejected/, never to the main output
STATUSES = (STATUS_OK, STATUS_EMPTY, STATUS_NO_TOKENS, STATUS_REJECTED)

# --- internal columns (between stages) ---------------------------------------
PATH = "path"  # added by ray.data.read_parquet(include_paths=True)
ROW_HASH = "row_hash"  # added by ray.data.read_parquet(include_row_hash=True)
I_SOURCE = "_source_file"
I_TEXT = "_text"
I_STATUS = "_status"
I_REASON = "_reason"
I_SEGMENTS = "_segments"  # names of the text columns present, in order
I_SEGMENT_STARTS = "_segment_starts"  # where each of them starts in the joined text
I_INPUT_IDS = "_input_ids"  # list<list<int32>>: windows, special tokens included
I_WINDOW_STARTS = "_window_starts"  # first document token of each window
I_TOKEN_START = "_token_start"  # per document token: character offsets in _text
I_TOKEN_END = "_token_end"
I_WORD_IDS = "_word_ids"  # per document token: its word
I_OWNER = "_owner"  # per document token: the window whose prediction it takes
I_CONTENT_OFFSET = "_content_offset"  # special tokens before the content in a window
I_PRED_IDS = "_pred_ids"  # list<list<int16>>: per window content token, canonical label id
I_PRED_SCORES = "_pred_scores"  # list<list<float32>>: softmax probability of that label
# list<list<fixed_size_list<float16, labels>>>: every canonical label's log-probability
# per window content token; only when decoding is "viterbi".
I_PRED_LOGP = "_pred_logp"
I_N_TOKENS = "_n_tokens"
# list<struct<section_type, title, start, end>>: the input's passages (corpora.pmc), offsets
# into the text; only when the job names a passages column. Read by decoding, not written.
I_PASSAGES = "_passages"

ENTITY_TYPE = pa.struct(
    [
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        pa.field("label", pa.string()),
        pa.field("text", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("column", pa.string()),
        # The section_type of the passage the entity starts in (corpora.pmc's passages);
        # null when the input has no passages.
        pa.field("section", pa.string()),
        # Labelled through an abbreviation's long form (#31 point 3); false until that
        # step runs.
        pa.field("via_abbreviation", pa.bool_()),
    ]
)
# The fields added by #31; stores written before it lack them (annotation.commit evolves).
ENTITY_ADDED = ("section", "via_abbreviation")

# Output columns the job always writes, in order; pass-through columns (and
# ``text`` with include_text) follow ``status``.
OUTPUT_HEAD = pa.schema(
    [
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(ENTITIES, pa.list_(ENTITY_TYPE), nullable=False),
        pa.field(STATUS, pa.string(), nullable=False),
    ]
)
PROVENANCE = pa.schema(
    [
        pa.field(MODEL_NAME, pa.string()),
        pa.field(MODEL_FINGERPRINT, pa.string()),
        pa.field(RUN_ID, pa.string()),
        pa.field(ANNOTATED_AT, pa.timestamp("us", tz="UTC")),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        pa.field(DOC_ID, pa.string()),
        pa.field(REASON, pa.string()),
        pa.field(SOURCE_FILE, pa.string()),
        pa.field(RUN_ID, pa.string()),
    ]
)


class MissingColumnError(KeyError):
    """A stage received a batch without a column it needs."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


def as_table(batch: Any) -> pa.Table:
    """A batch as an Arrow table: Ray's pyarrow batches pass through, dicts are converted."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):
        return pa.table({name: _as_array(values) for name, values in batch.items()})
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # a pandas frame
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(f"expected a pyarrow table or a dict of columns, got {type(batch).__name__}")


def _as_array(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if hasattr(values, "tolist"):
        values = values.tolist()
    return pa.array(list(values))


def require_columns(table: pa.Table, names: Iterable[str], stage: str) -> None:
    """Fail with the missing column's name (and the ones present) before doing any work."""
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise MissingColumnError(
            f"{stage}: batch has no column(s) {', '.join(missing)}; "
            f"it has {', '.join(table.column_names) or 'none'}"
        )


def internal(name: str) -> bool:
    """True for columns that only travel between stages."""
    return name.startswith("_") or name in (PATH, ROW_HASH)

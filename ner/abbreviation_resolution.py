"""Abbreviation resolution after span decoding: one label per short form and document.

For each short form a document defines (:func:`ner.abbreviations.find_definitions`,
the only Python per document, over its text), the entities overlapping the long
form's span decide:

- all of type T: every whole-word occurrence of the short form becomes (or stays)
  an entity of type T. An entity exactly on it is relabelled; an occurrence that no
  entity touches gains one (score: the mean of the long form's entities, column:
  the text column it starts in);
- none (the long form is not an entity): entities exactly on an occurrence are removed;
- of several types: nothing changes.

An entity that only partly overlaps an occurrence is left as it is, and an
occurrence is not added over another one added (neither is cut). Entities added or
relabelled have ``via_abbreviation`` true; every other entity keeps all its fields.
The rest is numpy over the batch's flat entity arrays, keyed by (row, offset).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner import columns as C
from ner import flat_columns as F
from ner import spans as S
from ner.abbreviations import find_definitions
from ner.decode import SpanDecodeStage

NO_ENTITY, MIXED = (
    -1,
    -2,
)  # a long form's type when no entity, or entities of several types, overlap it
VIA = "via_abbreviation"


def resolve_abbreviations(
    entities: pa.Array | pa.ChunkedArray,
    texts: pa.Array | pa.ChunkedArray,
    rows: np.ndarray,
    segments: tuple[pa.Array, pa.Array] | None = None,
    passages: pa.Array | pa.ChunkedArray | None = None,
) -> tuple[pa.Array, dict[str, int]]:
    """``entities`` (``list<entity>`` per row) resolved in the ``rows`` (mask) of ``texts``; and counts.

    ``segments``: per row, the text columns' names and starts (as decoding reads
    them), for the column of an entity added; without them it is ``""``. ``passages``
    (the ``_passages`` column decoding reads) give its section; without them it is
    null. A row's
    entities must be sorted by start and not overlap, as decoding writes them.
    """
    lists = F.ListColumn(entities, C.ENTITIES)
    n = len(lists.lengths)
    fields = dict(zip([f.name for f in lists.values.type], lists.values.flatten(), strict=True))
    if VIA not in fields:
        raise KeyError(f"the entity struct has no field {VIA!r}: {lists.values.type}")
    row = np.repeat(np.arange(n, dtype=np.int64), lists.lengths)
    start, end = (
        fields[k].to_numpy(zero_copy_only=False).astype(np.int64) for k in ("start", "end")
    )
    types = pc.fill_null(pc.index_in(fields["label"], value_set=S.TYPE_NAMES), -1)
    types = types.to_numpy(zero_copy_only=False).astype(np.int64)
    score = pc.fill_null(fields["score"], 0).to_numpy(zero_copy_only=False).astype(np.float64)
    d = _definitions(F.combined(texts), rows)
    stride = int(max(end.max(initial=0), d["occ_end"].max(initial=0), d["end"].max(initial=0))) + 1
    key_start, key_end = row * stride + start, row * stride + end

    def overlapping(at_row, at_start, at_end):  # the entities overlapping each span: [lo, hi)
        lo = np.searchsorted(key_end, at_row * stride + at_start, side="right")
        hi = np.searchsorted(key_start, at_row * stride + at_end, side="left")
        return lo, np.maximum(hi, lo)

    # The long forms' types and scores, from running counts per type over the entities.
    lo, hi = overlapping(d["row"], d["start"], d["end"])
    count = hi - lo
    known = types >= 0
    per_type = np.zeros((len(types) + 1, len(S.TYPE_NAMES)), dtype=np.int64)
    np.add.at(per_type, (np.flatnonzero(known) + 1, types[known]), 1)
    per_type = np.cumsum(per_type, axis=0)
    of_type = per_type[hi] - per_type[lo]
    best = of_type.argmax(axis=1) if len(of_type) else np.zeros(0, dtype=np.int64)
    uniform = of_type[np.arange(len(best)), best] == count
    long_type = np.where(count == 0, NO_ENTITY, np.where(uniform, best, MIXED))
    summed = np.concatenate([[0.0], np.cumsum(score)])
    long_score = (summed[hi] - summed[lo]) / np.maximum(count, 1)

    # Each occurrence: the entity exactly on it, if any, and what the long form says.
    o_row, o_start, o_end, o_def = d["occ_row"], d["occ_start"], d["occ_end"], d["occ_def"]
    lo, hi = overlapping(o_row, o_start, o_end)
    at = np.where(hi - lo == 1, lo, len(types))  # len(types): none (a sentinel below)
    sentinel = np.array([-1])
    exact = np.append(key_start, sentinel)[at] == o_row * stride + o_start
    exact &= np.append(key_end, sentinel)[at] == o_row * stride + o_end
    wanted = long_type[o_def]
    relabel = exact & (wanted >= 0) & (np.append(types, sentinel)[at] != wanted)
    remove = exact & (wanted == NO_ENTITY)
    add = _not_overlapping(
        np.flatnonzero((hi == lo) & (wanted >= 0)), o_row * stride, o_start, o_end
    )

    new_label = types.copy()
    new_label[at[relabel]] = wanted[relabel]
    changed = np.zeros(len(types), dtype=bool)
    changed[at[relabel]] = True
    kept = np.ones(len(types), dtype=bool)
    kept[at[remove]] = False
    kept = np.flatnonzero(kept)

    added = {
        "start": pa.array(o_start[add].astype(np.int32)),
        "end": pa.array(o_end[add].astype(np.int32)),
        "label": S.TYPE_NAMES.take(pa.array(wanted[add])),
        "text": pa.array([d["short"][k] for k in o_def[add]], pa.string()),
        "score": pa.array(long_score[o_def[add]].astype(np.float32)),
        "column": _columns(segments, o_row[add], o_start[add]),
        "section": _sections(passages, o_row[add], o_start[add]),
        VIA: pa.array(np.ones(len(add), dtype=bool)),
    }
    fields["label"] = pc.if_else(
        pa.array(changed), S.TYPE_NAMES.take(pa.array(np.maximum(new_label, 0))), fields["label"]
    )
    fields[VIA] = pc.or_(pc.fill_null(fields[VIA], False), pa.array(changed))
    out_row = np.concatenate([row[kept], o_row[add]])
    out_start = np.concatenate([start[kept], o_start[add]])
    order = pa.array(np.lexsort((out_start, out_row)))
    arrays = []
    for field in lists.values.type:
        extra = added.get(field.name, pa.nulls(len(add), field.type)).cast(field.type)
        arrays.append(
            pa.concat_arrays([fields[field.name].take(pa.array(kept)), extra]).take(order)
        )
    struct = pa.StructArray.from_arrays(arrays, fields=list(lists.values.type))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(out_row, minlength=n), out=offsets[1:])
    resolved = pa.ListArray.from_arrays(pa.array(offsets), struct, type=pa.list_(struct.type))
    counts = {
        "definitions": len(d["row"]),
        "long_forms_typed": int((long_type >= 0).sum()),
        "relabelled": int(relabel.sum()),
        "added": len(add),
        "removed": int(remove.sum()),
    }
    return resolved, counts


def _not_overlapping(add: np.ndarray, base: np.ndarray, start: np.ndarray, end: np.ndarray):
    """The spans ``add`` (indices) in (row, start) order, less each one overlapping an earlier one."""
    add = add[np.lexsort((start[add], base[add]))]
    if len(add) < 2:
        return add
    reach = np.maximum.accumulate(base[add] + end[add])
    return add[np.concatenate([[True], base[add][1:] + start[add][1:] >= reach[:-1]])]


def _definitions(texts: pa.Array, rows: np.ndarray) -> dict:
    """The definitions of the ``rows`` of ``texts`` and their occurrences, as flat arrays."""
    out = {
        k: []
        for k in ("row", "start", "end", "short", "occ_row", "occ_start", "occ_end", "occ_def")
    }
    values = texts.to_pylist()
    for i in np.flatnonzero(rows):
        if not values[i]:
            continue
        for definition in find_definitions(values[i]):
            index = len(out["short"])
            out["row"].append(i)
            out["start"].append(definition.long_start)
            out["end"].append(definition.long_end)
            out["short"].append(definition.short)
            for occ_start, occ_end in definition.occurrences:
                out["occ_row"].append(i)
                out["occ_start"].append(occ_start)
                out["occ_end"].append(occ_end)
                out["occ_def"].append(index)
    return {k: v if k == "short" else np.array(v, dtype=np.int64) for k, v in out.items()}


def _columns(segments, row: np.ndarray, start: np.ndarray) -> pa.Array:
    """The name of the text column each position starts in; ``""`` without segments."""
    if segments is None:
        return pa.array([""] * len(row), pa.string())
    names, starts = (
        F.ListColumn(column, name)
        for column, name in zip(segments, ("names", "starts"), strict=True)
    )
    counts = np.where(names.lengths == starts.lengths, names.lengths, 0)
    first = np.cumsum(counts) - counts
    segment = S.segment_of_words(row, start, starts.numbers[0], first, counts)
    pool = pa.concat_arrays([names.values.cast(pa.string()), pa.array([""])])
    return pool.take(pa.array(np.where(segment < 0, len(pool) - 1, segment)))


def _sections(passages, row: np.ndarray, start: np.ndarray) -> pa.Array:
    """The section type of the passage each position falls in; null without passages."""
    lookup = S.Passages(None if passages is None else F.combined(passages))
    return lookup.sections(lookup.of(row, start))


class DecodeWithAbbreviationsStage:
    """:class:`~ner.decode.SpanDecodeStage`, then :func:`resolve_abbreviations` on its output.

    One class for both, in the decoder's actors: resolution needs the text columns'
    starts, which decoding reads and then drops, and a stage of its own would add a
    hop between actor pools for a few numpy passes.
    """

    def __init__(self, **decode_kwargs):
        self.decode = SpanDecodeStage(**decode_kwargs)

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        out = self.decode(table)
        ok = pc.fill_null(pc.equal(out.column(C.STATUS), C.STATUS_OK), False)
        entities, _ = resolve_abbreviations(
            out.column(C.ENTITIES),
            out.column(C.I_TEXT),
            np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool),
            (table.column(C.I_SEGMENTS), table.column(C.I_SEGMENT_STARTS)),
            table.column(C.I_PASSAGES) if C.I_PASSAGES in table.column_names else None,
        )
        return out.set_column(out.column_names.index(C.ENTITIES), C.ENTITIES, entities)

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

# A long form's type when no entity overlaps it, or entities of several types do.
NO_ENTITY, MIXED = -1, -2
VIA = "via_abbreviation"


def resolve_abbreviations(
    entities: pa.Array | pa.ChunkedArray,
    texts: pa.Array | pa.ChunkedArray,
    rows: np.ndarray,
    segments: tuple[pa.Array, pa.Array] | None = None,
    passages: pa.Array | pa.ChunkedArray | None = None,
) -> tuple[pa.Array, dict[str, int]]:
    """``entities`` (``list<entity>`` per row) resolved in the ``rows`` (a mask) of ``texts``; counts.

    ``segments``: per row, the text columns' names and starts (as decoding reads
    them), for the column of an entity added (``""`` without). ``passages``: the
    ``_passages`` column decoding reads, for its section (null without). A row's
    entities must be sorted by start and must not overlap, as decoding writes them.
    """
    batch = _Entities(entities)
    d = _definitions(F.combined(texts), rows)
    batch.key_by(max(d["occ_end"].max(initial=0), d["end"].max(initial=0)))
    long_type, long_score = _long_forms(batch, d)

    # Each occurrence: the entity exactly on it, if any, and what its long form says.
    o_row, o_start, o_end, o_def = d["occ_row"], d["occ_start"], d["occ_end"], d["occ_def"]
    lo, hi = batch.overlapping(o_row, o_start, o_end)
    at = np.where(hi - lo == 1, lo, batch.n)  # batch.n: no entity (the sentinel of keys())
    key_start, key_end = batch.keys()
    exact = (key_start[at] == batch.key(o_row, o_start)) & (key_end[at] == batch.key(o_row, o_end))
    wanted = long_type[o_def]
    relabel = exact & (wanted >= 0) & (np.append(batch.types, -1)[at] != wanted)
    remove = exact & (wanted == NO_ENTITY)
    add = _not_overlapping(np.flatnonzero((hi == lo) & (wanted >= 0)), batch, o_row, o_start, o_end)
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
    resolved = batch.rebuilt(at[relabel], wanted[relabel], at[remove], o_row[add], added)
    counts = {
        "definitions": len(d["row"]),
        "long_forms_typed": int((long_type >= 0).sum()),
        "relabelled": int(relabel.sum()),
        "added": len(add),
        "removed": int(remove.sum()),
    }
    return resolved, counts


class _Entities:
    """A batch's entities as flat arrays, addressed by one (row, offset) key."""

    def __init__(self, entities: pa.Array | pa.ChunkedArray):
        self.lists = F.ListColumn(entities, C.ENTITIES)
        self.type = self.lists.values.type
        names = [field.name for field in self.type]
        self.fields = dict(zip(names, self.lists.values.flatten(), strict=True))
        if VIA not in self.fields:
            raise KeyError(f"the entity struct has no field {VIA!r}: {self.type}")
        self.n = len(self.lists.values)
        self.row = np.repeat(np.arange(len(self.lists.lengths), dtype=np.int64), self.lists.lengths)
        self.start, self.end = (self._numbers(k).astype(np.int64) for k in ("start", "end"))
        types = pc.fill_null(pc.index_in(self.fields["label"], value_set=S.TYPE_NAMES), -1)
        self.types = types.to_numpy(zero_copy_only=False).astype(np.int64)
        self.score = pc.fill_null(self.fields["score"], 0).to_numpy(zero_copy_only=False)

    def _numbers(self, name: str) -> np.ndarray:
        return self.fields[name].to_numpy(zero_copy_only=False)

    def key_by(self, largest_offset: int) -> None:
        """Key offsets up to ``largest_offset`` (and the entities' own) by row."""
        self.stride = int(max(self.end.max(initial=0), largest_offset)) + 1

    def key(self, row: np.ndarray, offset: np.ndarray) -> np.ndarray:
        return row * self.stride + offset

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The entities' start and end keys, sorted, each with a last entry -1 for 'none'."""
        return (
            np.append(self.key(self.row, self.start), -1),
            np.append(self.key(self.row, self.end), -1),
        )

    def overlapping(self, row, start, end) -> tuple[np.ndarray, np.ndarray]:
        """Per span, the entities overlapping it: indices ``lo`` to ``hi - 1``."""
        key_start, key_end = (keys[:-1] for keys in self.keys())
        lo = np.searchsorted(key_end, self.key(row, start), side="right")
        hi = np.searchsorted(key_start, self.key(row, end), side="left")
        return lo, np.maximum(hi, lo)

    def rebuilt(self, relabel, label, remove, added_row, added: dict) -> pa.Array:
        """The entities, ``relabel`` (indices) given ``label``s, ``remove`` left out, ``added`` in."""
        fields = dict(self.fields)
        changed = np.zeros(self.n, dtype=bool)
        changed[relabel] = True
        labels = np.zeros(self.n, dtype=np.int64)
        labels[relabel] = label
        fields["label"] = pc.if_else(
            pa.array(changed), S.TYPE_NAMES.take(pa.array(labels)), fields["label"]
        )
        fields[VIA] = pc.or_(pc.fill_null(fields[VIA], False), pa.array(changed))
        keep = np.ones(self.n, dtype=bool)
        keep[remove] = False
        kept = np.flatnonzero(keep)
        row = np.concatenate([self.row[kept], added_row])
        start = np.concatenate([self.start[kept], added["start"].to_numpy()])
        order = pa.array(np.lexsort((start, row)))
        arrays = []
        for field in self.type:
            extra = added.get(field.name, pa.nulls(len(added_row), field.type)).cast(field.type)
            both = pa.concat_arrays([fields[field.name].take(pa.array(kept)), extra])
            arrays.append(both.take(order))
        struct = pa.StructArray.from_arrays(arrays, fields=list(self.type))
        n_rows = len(self.lists.lengths)
        offsets = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(row, minlength=n_rows), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), struct, type=pa.list_(self.type))


def _long_forms(batch: _Entities, d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each long form's type (or NO_ENTITY, MIXED) and its entities' mean score.

    Running counts per type over the batch's entities give, for the entities
    overlapping each long form, how many there are of each type.
    """
    lo, hi = batch.overlapping(d["row"], d["start"], d["end"])
    count = hi - lo
    known = batch.types >= 0
    per_type = np.zeros((batch.n + 1, len(S.TYPE_NAMES)), dtype=np.int64)
    np.add.at(per_type, (np.flatnonzero(known) + 1, batch.types[known]), 1)
    per_type = np.cumsum(per_type, axis=0)
    of_type = per_type[hi] - per_type[lo]
    best = of_type.argmax(axis=1) if len(of_type) else np.zeros(0, dtype=np.int64)
    uniform = of_type[np.arange(len(best)), best] == count
    long_type = np.where(count == 0, NO_ENTITY, np.where(uniform, best, MIXED))
    summed = np.concatenate([[0.0], np.cumsum(batch.score, dtype=np.float64)])
    return long_type, (summed[hi] - summed[lo]) / np.maximum(count, 1)


def _not_overlapping(add: np.ndarray, batch: _Entities, row, start, end) -> np.ndarray:
    """The spans ``add`` (indices) in (row, start) order, less each one overlapping an earlier one."""
    add = add[np.lexsort((start[add], row[add]))]
    if len(add) < 2:
        return add
    reach = np.maximum.accumulate(batch.key(row[add], end[add]))
    return add[np.concatenate([[True], batch.key(row[add], start[add])[1:] >= reach[:-1]])]


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

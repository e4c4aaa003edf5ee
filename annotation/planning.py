"""Plan a reprocessing run: which documents are new, changed, stale, carried or deleted.

The corpus is compared with the store's state (``doc_id, content_hash`` and the
fingerprints of the model and settings that made each row) as Arrow arrays: set
membership and positions (``index_in``) in Arrow's kernels, no Python object per
document. The fingerprints are reduced to one flag per row as the state is read,
since they are most of its bytes.

What stays per document in Python is the content hash of a corpus that does not
bring its own (:func:`annotation.hashing.content_hash`): ``jobs.pubmed_to_parquet``
writes a ``content_hash`` column at conversion, so a PubMed run reads only ids and
hashes in its first pass and the texts of the documents it annotates in the second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation import staging as S
from annotation import store
from annotation.config import CONTENT_HASH, ReprocessConfig
from annotation.hashing import HASHED_COLUMNS_KEY, content_hash
from corpora.corpus import InputError
from corpora.pubmed_updates import CurrentState
from corpora.writer import safe_stem
from ner import columns as C
from plumbing.atomic import write_parquet_atomic

SCAN_BATCH_ROWS = 8192
_ROW = "_row"  # (file index << 40) | row within the file's scan: a row's place
_KEYS = pa.schema([(C.DOC_ID, pa.string()), (CONTENT_HASH, pa.string())])


@dataclass
class Previous:
    """The store's state: one row per stored document, and why all of it is stale, if so."""

    state: pa.Table  # doc_id, content_hash, stale (other model or settings)
    reason: str


@dataclass
class Plan:
    needed: pa.Table  # doc_id, content_hash: documents this run's rows must hold
    deleted: pa.Array  # stored ids no longer in the corpus, sorted
    positions: pa.ChunkedArray | pa.Array  # each needed document's row (_ROW), in order
    carried: int = 0
    todo_files: list[str] = field(default_factory=list)
    todo_rows: int = 0
    resumed: int = 0


def load_previous(batches, fingerprint: str, settings_fp: str) -> Previous:
    """Which stored rows are stale: the state's batches reduced to ids, hashes and a flag.

    ``batches`` hold ``doc_id, content_hash, model_fingerprint, settings_fingerprint``
    (:func:`annotation.store.read_state`); the fingerprints are compared as each
    batch arrives and not kept.
    """
    ids, hashes, stale = [], [], []
    all_other_settings = all_other_model = True
    first_model = None
    for batch in batches:
        if not batch.num_rows:
            continue
        other_settings = pc.fill_null(
            pc.not_equal(batch.column(store.SETTINGS_FINGERPRINT), settings_fp), True
        )
        models = batch.column(C.MODEL_FINGERPRINT)
        other_model = pc.fill_null(pc.not_equal(models, fingerprint), True)
        all_other_settings &= pc.all(other_settings).as_py()
        all_other_model &= pc.all(other_model).as_py()
        first_model = first_model if first_model is not None else models[0].as_py()
        ids.append(pc.cast(batch.column(C.DOC_ID), pa.string()))
        hashes.append(pc.cast(batch.column(CONTENT_HASH), pa.string()))
        stale.append(pc.or_(other_settings, other_model))
    reason = ""
    if ids and all_other_settings:
        reason = "annotation settings changed"
    elif ids and all_other_model:
        reason = f"model changed ({first_model} -> {fingerprint})"
    table = pa.table(
        {
            C.DOC_ID: pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
            "previous_hash": pa.concat_arrays(hashes) if ids else pa.array([], pa.string()),
            "stale": pa.concat_arrays(stale) if ids else pa.array([], pa.bool_()),
        }
    )
    return Previous(table, reason)


def _scan(config: ReprocessConfig, handle, path: str, k: int, current, texts: bool):
    """The batches of file ``k`` as the plan reads them, each with its ``_row`` keys.

    Without ``texts`` only ids and hashes are wanted: a file that brings its own
    ``content_hash`` over the configured text columns is read without its text.
    """
    reader = pq.ParquetFile(handle)
    hashed = (reader.schema_arrow.metadata or {}).get(HASHED_COLUMNS_KEY)
    own_hash = hashed is not None and json.loads(hashed) == list(config.text_columns)
    wanted = [config.id_column]
    if texts or not own_hash:
        wanted += config.text_columns
    if texts:
        wanted += [
            *config.passthrough,
            *([config.passages_column] if config.passages_column else []),
        ]
    if own_hash:
        wanted.append(CONTENT_HASH)
    wanted = list(dict.fromkeys(wanted))
    columns = current.columns(wanted) if current else wanted
    offset = 0
    for batch in reader.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=columns):
        if current is not None:
            batch = current.rows(path, batch, wanted)
        if not own_hash and not texts:  # with texts, _stage hashes only the rows it keeps
            batch = _with_hashes(config, batch)
        rows = pa.array(range(offset, offset + batch.num_rows), pa.int64())
        offset += batch.num_rows
        yield batch, pc.add(rows, k << 40)


def _with_hashes(config: ReprocessConfig, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with each row's content hash over the configured text columns appended."""
    values = [batch.column(name).to_pylist() for name in config.text_columns]
    hashes = pa.array([content_hash(v) for v in zip(*values, strict=True)], pa.string())
    return pa.RecordBatch.from_arrays(
        [*batch.columns, hashes], names=[*batch.schema.names, CONTENT_HASH]
    )


def classify(
    config: ReprocessConfig,
    filesystem: pafs.FileSystem,
    files: list[str],
    previous: Previous,
    summary,
    current: CurrentState | None = None,
) -> Plan:
    """Which documents are new, changed, stale, carried or deleted; counts go to ``summary``.

    One pass over ids and hashes of every file (the text is read only where a hash
    must be computed).
    """
    parts = []
    for k, path in enumerate(files):
        with filesystem.open_input_file(path) as handle:
            for batch, rows in _scan(config, handle, path, k, current, texts=False):
                ids = pc.cast(batch.column(config.id_column), pa.string())
                parts.append(
                    pa.table({C.DOC_ID: ids, CONTENT_HASH: batch.column(CONTENT_HASH), _ROW: rows})
                )
    corpus = (
        pa.concat_tables(parts)
        if parts
        else _KEYS.empty_table().append_column(_ROW, pa.array([], pa.int64()))
    )
    summary.null_ids = corpus[C.DOC_ID].null_count
    corpus = corpus.filter(pc.is_valid(corpus[C.DOC_ID]))
    corpus = _first_of_each(corpus, summary)

    # Each document's stored row, by position: no joined copy of the tables.
    state = previous.state
    position = pc.index_in(corpus[C.DOC_ID], value_set=state[C.DOC_ID].combine_chunks())
    before = pc.take(state["previous_hash"], position)  # null where the id is new
    is_new = pc.is_null(position)
    is_changed = pc.fill_null(pc.not_equal(before, corpus[CONTENT_HASH]), False)
    same = pc.fill_null(pc.equal(before, corpus[CONTENT_HASH]), False)
    is_stale = pc.and_(same, pc.fill_null(pc.take(state["stale"], position), False))
    del before
    summary.documents = corpus.num_rows
    summary.new = _count(is_new)
    summary.changed = _count(is_changed)
    summary.model_changed = _count(is_stale)
    summary.carried = summary.documents - summary.new - summary.changed - summary.model_changed
    summary.deleted = state.num_rows - summary.changed - summary.model_changed - summary.carried
    needed = corpus.filter(pc.or_(pc.or_(is_new, is_changed), is_stale)).sort_by(_ROW)
    ids = corpus[C.DOC_ID].combine_chunks()
    gone = pc.invert(pc.is_in(state[C.DOC_ID], value_set=ids))
    deleted = state[C.DOC_ID].filter(gone).combine_chunks()
    return Plan(
        needed=needed.select([C.DOC_ID, CONTENT_HASH]),
        deleted=deleted.take(pc.array_sort_indices(deleted)),
        positions=needed[_ROW],
        carried=summary.carried,
    )


def stage(
    config: ReprocessConfig,
    filesystem: pafs.FileSystem,
    files: list[str],
    plan: Plan,
    done: pa.Table,
    todo_dir: str | Path | None,
    current: CurrentState | None = None,
    staging_fs: pafs.FileSystem | None = None,
) -> None:
    """Write the needed documents not in ``done`` to ``todo_dir`` (on ``staging_fs``).

    A pass over the files holding to-do rows only: those rows, with their text, one
    to-do Parquet file per input file.
    """
    resumed = pc.is_in(S.pair_keys(plan.needed), value_set=S.pair_keys(done))
    plan.resumed = _count(resumed)
    todo = plan.positions.filter(pc.invert(resumed))
    if todo_dir is not None and len(todo):
        _stage(config, filesystem, files, todo, str(todo_dir), current, plan, staging_fs)


def _first_of_each(corpus: pa.Table, summary) -> pa.Table:
    """Each id once, at its first row; an id seen again with other text is an error."""
    if pc.count_distinct(corpus[C.DOC_ID]).as_py() == corpus.num_rows:
        return corpus  # the usual case, and PubMed's current records: no group-by
    groups = corpus.group_by(C.DOC_ID, use_threads=False).aggregate(
        [(_ROW, "min"), (CONTENT_HASH, "count_distinct")]
    )
    conflicting = pc.greater(groups[f"{CONTENT_HASH}_count_distinct"], 1)
    if pc.any(conflicting).as_py():
        bad = groups.filter(conflicting).sort_by(f"{_ROW}_min")[C.DOC_ID].to_pylist()
        raise InputError(
            f"{len(bad):,} doc_id(s) occur more than once with different text, e.g. "
            + ", ".join(bad[:5])
            + "; the store is keyed by doc_id"
        )
    summary.duplicate_ids = corpus.num_rows - groups.num_rows
    if not summary.duplicate_ids:
        return corpus
    first = groups[f"{_ROW}_min"].combine_chunks()
    return corpus.filter(pc.is_in(corpus[_ROW], value_set=first))


def _stage(config, filesystem, files, todo, todo_dir: str, current, plan, staging_fs):
    """Write the to-do rows, with their text and hash, one Parquet file per input file."""
    file_of = pc.shift_right(todo, 40)
    for k in pc.unique(file_of).to_pylist():
        wanted = todo.filter(pc.equal(file_of, k)).combine_chunks()
        parts = []
        path = files[k]
        with filesystem.open_input_file(path) as handle:
            for batch, rows in _scan(config, handle, path, k, current, texts=True):
                keep = pc.is_in(rows, value_set=wanted)
                if pc.any(keep).as_py():
                    kept = batch.filter(keep)
                    if CONTENT_HASH not in kept.schema.names:
                        kept = _with_hashes(config, kept)
                    parts.append(pa.Table.from_batches([kept]))
        table = pa.concat_tables(parts)
        order = [config.id_column, *config.text_columns, *config.passthrough, CONTENT_HASH]
        order += [config.passages_column] if config.passages_column else []
        table = table.select(list(dict.fromkeys(order)))
        target = f"{todo_dir}/f{k:05d}-{safe_stem(path, 60)}.parquet"
        write_parquet_atomic(table.replace_schema_metadata(None), target, staging_fs)
        plan.todo_files.append(target)
        plan.todo_rows += table.num_rows


def _count(mask) -> int:
    return pc.sum(mask).as_py() or 0


def empty_done() -> pa.Table:
    return _KEYS.empty_table()

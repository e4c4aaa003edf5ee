"""One run, one table version: the two ways a run's rows reach the Delta table.

- :func:`commit_files`: the run's data files, written by the pipeline's workers,
  become the table's files. The driver moves them from the staging area into the
  table's folder (a rename on a local disk, a server-side copy on S3: no data
  through the driver) and commits their add actions, with the footer's row count
  and ``doc_id`` range as statistics. Used for the first run and for every run that
  re-annotates all documents (another model, other settings): a full rewrite is
  the table overwritten by the run's files. This is what Ray Data's
  ``DeltaDatasink`` does; it is not used as it is because the run's files must
  outlive a crash (resume) and the commit must carry the run's metadata and check
  the version the run planned against.
- :func:`commit`: rows that replace and delete some of the table's rows, as one
  ``MERGE`` on ``doc_id`` (delta-rs): the rows arrive as a stream, deleted ids as
  source rows flagged ``_delete``, so no list of ids is built in Python. The merge
  itself runs in this process and rewrites every data file that holds a matched
  row: for a scattered update, every file (BENCHMARKS.md, "Store at scale").

Both refuse a commit when another writer committed after the run read the table
(:class:`ConcurrentCommitError`): a version check before writing, then delta-rs's
own conflict check (and, on S3, ``aws_conditional_put: etag`` so that two writers
of one version cannot both write its log entry).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, create_table_with_add_actions

from annotation.store import conform, filesystem, table_uri
from ner import columns as C

DELETE_FLAG = "_delete"  # a merge source row that deletes its id
_MOVE_THREADS = 16  # S3 copies are round trips; a thread pool keeps thousands of files quick


class ConcurrentCommitError(RuntimeError):
    """Another writer committed to the table after this run read it; nothing was committed."""


def _properties(metadata: dict) -> CommitProperties:
    return CommitProperties(custom_metadata={key: str(value) for key, value in metadata.items()})


def _latest_version(store: str, storage_options: dict | None) -> int:
    return DeltaTable(table_uri(store), storage_options=storage_options).version()


def _check_base(store: str, base: DeltaTable | None, storage_options: dict | None) -> None:
    if base is not None and _latest_version(store, storage_options) != base.version():
        raise ConcurrentCommitError(
            f"another run committed to {store} while this one ran (it planned against "
            f"version {base.version()}); nothing committed"
        )


def commit(
    store: str,
    base: DeltaTable | None,
    rows: pa.Table | pa.RecordBatchReader,
    deleted: Sequence[str] | pa.Array = (),
    *,
    replace_all: bool = False,
    metadata: dict,
    storage_options: dict | None = None,
    target_file_mb: int = 32,
) -> int:
    """Apply rows (replacing those with their ids, or added) and deletions in one version.

    With no table yet, or ``replace_all``, the table is (over)written by ``rows``.
    Returns the new version.
    """
    options = dict(
        storage_options=storage_options,
        commit_properties=_properties(metadata),
        target_file_size=target_file_mb << 20,
    )
    deleted = pa.array(deleted, pa.string()) if not isinstance(deleted, pa.Array) else deleted
    try:
        _check_base(store, base, storage_options)
        if base is None:
            # mode="error": two first runs racing to create the table cannot both win.
            write_deltalake(table_uri(store), rows, mode="error", **options)
        elif replace_all:
            write_deltalake(base, rows, mode="overwrite", schema_mode="overwrite", **options)
        else:
            if _older_entities(pa.schema(base.schema().to_arrow())):
                base = evolve_entities(store, base, storage_options)
            schema = pa.schema(base.schema().to_arrow())
            source = _merge_source(rows, deleted, schema)
            (
                base.merge(
                    source,
                    predicate=f"t.{C.DOC_ID} = s.{C.DOC_ID}",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=options["commit_properties"],
                )
                .when_matched_delete(predicate=f"s.{DELETE_FLAG}")
                .when_matched_update_all(
                    predicate=f"NOT s.{DELETE_FLAG}", except_cols=[DELETE_FLAG]
                )
                .when_not_matched_insert_all(
                    predicate=f"NOT s.{DELETE_FLAG}", except_cols=[DELETE_FLAG]
                )
                .execute()
            )
    except CommitFailedError as err:
        raise ConcurrentCommitError(
            f"another run committed to {store} while this one ran; nothing committed: {err}"
        ) from err
    except FileExistsError as err:
        raise ConcurrentCommitError(f"another run created {store} first: {err}") from err
    return _latest_version(store, storage_options)


def _older_entities(schema: pa.Schema) -> bool:
    """True for a table written before the entity struct gained fields (#31)."""
    if C.ENTITIES not in schema.names:
        return False
    element = schema.field(C.ENTITIES).type.value_type
    return any(element.get_field_index(name) < 0 for name in C.ENTITY_ADDED)


def with_entity_fields(lists: pa.Array) -> pa.Array:
    """``list<entity>`` of an older struct in :data:`~ner.columns.ENTITY_TYPE`: fields it
    lacks are null (``section``: not known) or false (``via_abbreviation``)."""
    values = lists.values
    children = []
    for field in C.ENTITY_TYPE:
        if values.type.get_field_index(field.name) >= 0:
            children.append(values.field(field.name).cast(field.type))
        elif pa.types.is_boolean(field.type):
            children.append(pa.array(np.zeros(len(values), dtype=bool)))
        else:
            children.append(pa.nulls(len(values), field.type))
    struct = pa.StructArray.from_arrays(
        children, fields=list(C.ENTITY_TYPE), mask=values.is_null() if values.null_count else None
    )
    return pa.ListArray.from_arrays(
        lists.offsets,
        struct,
        type=pa.list_(C.ENTITY_TYPE),
        mask=lists.is_null() if lists.null_count else None,
    )


def evolve_entities(
    store: str, base: DeltaTable, storage_options: dict | None = None
) -> DeltaTable:
    """The table rewritten with the current entity struct, as a version of its own.

    A MERGE cannot do it: casting the run's rows to the table's older struct would drop
    the new fields, and delta-rs's ``merge_schema`` left the untouched rows' entities
    null (deltalake 1.6). So the first update after the change streams every row once
    into an overwrite (no run metadata: it is no run's version); the MERGE follows.
    """
    schema = pa.schema(base.schema().to_arrow())
    index = schema.get_field_index(C.ENTITIES)
    field = schema.field(index).with_type(pa.list_(C.ENTITY_TYPE))
    target = schema.set(index, field)

    dataset = base.to_pyarrow_dataset()  # opened here: delta-rs pulls the stream itself

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in dataset.to_batches():
            columns = batch.columns
            columns[index] = with_entity_fields(batch.column(index))
            yield pa.RecordBatch.from_arrays(columns, schema=target)

    write_deltalake(
        base,
        pa.RecordBatchReader.from_batches(target, batches()),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=storage_options,
        commit_properties=_properties(
            {"craft_ner.evolution": "entity struct: section, via_abbreviation (#31)"}
        ),
    )
    return DeltaTable(table_uri(store), storage_options=storage_options)


def _merge_source(
    rows: pa.Table | pa.RecordBatchReader, deleted: pa.Array, schema: pa.Schema
) -> pa.RecordBatchReader:
    """The run's rows, then one row per deleted id, each with the ``_delete`` flag."""
    fields = [f.with_nullable(f.name != C.DOC_ID) for f in schema]
    source = pa.schema([*fields, pa.field(DELETE_FLAG, pa.bool_(), nullable=False)])
    batches = rows.to_batches() if isinstance(rows, pa.Table) else rows

    def stream() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield _flagged(conform(pa.Table.from_batches([batch]), schema), False, source)
        for start in range(0, len(deleted), 65536):
            ids = deleted[start : start + 65536]
            yield _flagged(pa.table({C.DOC_ID: ids}), True, source)

    return pa.RecordBatchReader.from_batches(source, stream())


def _flagged(table: pa.Table, delete: bool, source: pa.Schema) -> pa.RecordBatch:
    n = table.num_rows
    arrays = []
    for field in source:
        if field.name == DELETE_FLAG:
            arrays.append(pa.array([delete] * n, pa.bool_()))
        elif field.name in table.column_names:
            arrays.append(table.column(field.name).combine_chunks().cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=source)


def commit_files(
    store: str,
    base: DeltaTable | None,
    staging_fs: pafs.FileSystem,
    files: Sequence[str],
    folder: str,
    *,
    metadata: dict,
    storage_options: dict | None = None,
) -> int:
    """Make the workers' ``files`` the table's whole content, as one new version.

    The files move into ``<table>/<folder>/`` (staging and table share one
    filesystem), then one commit adds them: a new table (``mode=error``), or an
    overwrite of every earlier file. On a refused commit the files move back, so a
    rerun of the run still finds them.
    """
    table_fs, root = filesystem(store, storage_options)
    if type(table_fs) is not type(staging_fs):
        raise ValueError("the staging area and the store must be on one filesystem")
    _check_base(store, base, storage_options)
    moves = [(path, f"{root}/{folder}/{path.rsplit('/', 1)[-1]}") for path in files]
    table_fs.create_dir(f"{root}/{folder}", recursive=True)
    with ThreadPoolExecutor(_MOVE_THREADS) as pool:
        list(pool.map(lambda m: staging_fs.move(*m), moves))
        adds = list(pool.map(lambda m: _add_action(table_fs, m[1], root), moves))
    schema = pq.read_schema(moves[0][1], filesystem=table_fs).remove_metadata()
    try:
        if base is None:
            create_table_with_add_actions(
                table_uri(store),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                storage_options=storage_options,
                commit_properties=_properties(metadata),
            )
        else:
            base.create_write_transaction(
                adds, mode="overwrite", schema=schema, commit_properties=_properties(metadata)
            )
    except (CommitFailedError, FileExistsError) as err:
        with ThreadPoolExecutor(_MOVE_THREADS) as pool:
            list(pool.map(lambda m: staging_fs.move(m[1], m[0]), moves))
        raise ConcurrentCommitError(
            f"another run committed to {store} while this one ran; nothing committed: {err}"
        ) from err
    return _latest_version(store, storage_options)


def _add_action(fs: pafs.FileSystem, path: str, root: str) -> AddAction:
    """The add action of a data file, with statistics from its footer alone.

    ``doc_id``'s range lets a later merge or reader skip the file for ids outside it.
    """
    with fs.open_input_file(path) as handle:
        size = handle.size()
        meta = pq.ParquetFile(handle).metadata
    column = meta.schema.to_arrow_schema().get_field_index(C.DOC_ID)
    lows, highs, nulls = [], [], 0
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(column).statistics
        if chunk is None or not chunk.has_min_max:
            lows = None
            break
        lows.append(chunk.min)
        highs.append(chunk.max)
        nulls += chunk.null_count or 0
    stats = {"numRecords": meta.num_rows}
    if lows:
        stats |= {
            "minValues": {C.DOC_ID: min(lows)},
            "maxValues": {C.DOC_ID: max(highs)},
            "nullCount": {C.DOC_ID: nulls},
        }
    return AddAction(
        path=path[len(root) :].lstrip("/"),
        size=size,
        partition_values={},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats),
    )

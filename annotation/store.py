"""The reprocessing store: one Delta Lake table, one row per document, one commit per run.

Why Delta Lake (``deltalake``, the delta-rs bindings) and not Apache Iceberg
(``pyiceberg``): delta-rs is one wheel with no JVM and no catalog service; the
table is self-describing (its ``_delta_log/`` is the catalog), so a directory or an
``s3://`` prefix is the whole store, where Iceberg needs a catalog beside it (SQLite
at least) that every reader must be given. Its writers commit with optimistic
concurrency (a commit built on a stale version fails), its versions give time
travel, ``vacuum`` expires them with an explicit retention, and DuckDB
(``delta_scan``), polars (``read_delta``), pandas and Spark read it as it is.

A row holds the annotation columns, the document's ``content_hash``, the
``model_fingerprint`` and ``settings_fingerprint`` it was annotated with, and the
``run_id`` that annotated it. Documents that could not be annotated are rows with
status ``rejected`` and a ``reason``. A run changes the table with one commit
(:mod:`annotation.commit`): the workers' files become the table when every row
changes (the first run, another model); otherwise one merge on ``doc_id``
replaces the rows the run annotated and deletes those gone from the corpus.
delta-rs writes no deletion vectors, so a merge rewrites the data files that hold
a replaced or deleted row, and only those: files hold ``doc_id`` ranges (each
written file is sorted by it) and are capped in size, so new documents and
clustered edits touch few files (measured in BENCHMARKS.md, "Store update").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from annotation.config import CONTENT_HASH
from corpora.corpus import resolve_filesystem
from ner import columns as C
from plumbing.config import ConfigError

SETTINGS_FINGERPRINT = "settings_fingerprint"
# Columns the plan reads from the table (column projection: never the annotations).
STATE_COLUMNS = (C.DOC_ID, CONTENT_HASH, C.MODEL_FINGERPRINT, SETTINGS_FINGERPRINT)
# Columns after the annotation columns, in this order; rejected rows fill reason/source_file.
EXTRA = (
    pa.field(CONTENT_HASH, pa.string()),
    pa.field(SETTINGS_FINGERPRINT, pa.string()),
    pa.field(C.REASON, pa.string()),
    pa.field(C.SOURCE_FILE, pa.string()),
)
RUN_KEY = "run_id"  # commit metadata: the run that made a version
COUNTS_KEY = "counts"


class StoreFormatError(ConfigError):
    """The store directory holds something other than this version's Delta table."""


def is_uri(store: str) -> bool:
    return "://" in store


def table_uri(store: str) -> str:
    """The table's location for delta-rs: a URI as given, a local path made absolute."""
    return store if is_uri(store) else str(Path(store).expanduser().resolve())


def filesystem(store: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a store (or of its staging area) and the path in it.

    For ``s3://`` the delta-rs ``storage_options`` (endpoint, keys, region) build it,
    so that the table, its staging area and the workers' writes all reach one place;
    without them pyarrow reads the usual ``AWS_*`` variables. Other URIs and local
    paths resolve as the annotation job's outputs do.
    """
    options = {k.upper(): v for k, v in (storage_options or {}).items()}
    if store.startswith(("s3://", "s3a://")) and options:
        endpoint = options.get("AWS_ENDPOINT_URL", "")
        fs = pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"),
            region=options.get("AWS_REGION") or options.get("AWS_DEFAULT_REGION"),
            endpoint_override=endpoint.split("://", 1)[-1] or None,
            scheme="http" if endpoint.startswith("http://") else "https",
        )
        return fs, store.split("://", 1)[1].rstrip("/")
    fs, path = resolve_filesystem(table_uri(store))
    return fs, path.rstrip("/")


def refuse_old_format(store: str) -> None:
    """Refuse a store written by the manifest-and-snapshots version of this job."""
    if is_uri(store):
        return
    root = Path(store).expanduser()
    if (root / "manifests").is_dir() and not (root / "_delta_log").is_dir():
        raise StoreFormatError(
            f"store {store} is an old snapshot store (manifests/ and snapshots/), not a Delta "
            "table. It is not migrated in place: run reprocess into a new, empty store "
            "(store=NEW_DIR; every document is annotated once), then delete the old directory. "
            "Until then its snapshots stay readable as Parquet under snapshots/<id>/."
        )


def open_table(
    store: str, storage_options: dict | None = None, version: int | None = None
) -> DeltaTable | None:
    """The table (at ``version``, else the latest), or None where no table exists yet."""
    refuse_old_format(store)
    try:
        return DeltaTable(table_uri(store), version=version, storage_options=storage_options)
    except TableNotFoundError:
        return None


def read_state(table: DeltaTable | None) -> Iterator[pa.RecordBatch]:
    """``doc_id, content_hash, model_fingerprint, settings_fingerprint`` of every row, in batches.

    Batches, so that the planner can reduce the two fingerprints to one flag per row
    as it reads: at PubMed's scale they are most of these columns' bytes.
    """
    if table is None:
        return
    dataset = table.to_pyarrow_dataset()
    yield from dataset.to_batches(columns=list(STATE_COLUMNS))


def read_store(
    store: str,
    version: int | None = None,
    *,
    rejected: bool = False,
    columns: Sequence[str] | None = None,
    storage_options: dict | None = None,
) -> pa.Table:
    """The annotation rows (or, with ``rejected``, the rejected documents) of a version.

    The latest version unless ``version`` names one (time travel).
    """
    table = open_table(store, storage_options, version)
    if table is None:
        raise FileNotFoundError(f"store {store} holds no Delta table yet")
    rows = table.to_pyarrow_table()
    is_rejected = pc.equal(rows.column(C.STATUS), C.STATUS_REJECTED)
    rows = rows.filter(is_rejected if rejected else pc.invert(is_rejected))
    return rows.select(list(columns)) if columns is not None else rows


def committed_runs(table: DeltaTable | None) -> dict[str, int]:
    """run_id -> version of every run committed to the table (from the commit metadata)."""
    if table is None:
        return {}
    return {entry[RUN_KEY]: entry["version"] for entry in table.history() if entry.get(RUN_KEY)}


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with ``schema``'s columns in its order, absent ones null (rejected rows)."""
    arrays = []
    for field in schema:
        if field.name in rows.column_names:
            arrays.append(rows.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def table_rows(
    annotated: pa.Table | None, rejected: pa.Table | None, model_name: str, fingerprint: str
) -> pa.Table:
    """One table of a run's rows: annotated rows, then rejected ones as ``rejected`` rows.

    Both come from the annotation writer; each carries ``content_hash`` and
    ``settings_fingerprint``. Sorted by ``doc_id``, so each file's id range is narrow
    and a later commit rewrites only the files whose ranges its ids fall in.
    """
    parts = []
    if annotated is not None:
        parts.append(annotated)
    if rejected is not None and rejected.num_rows:
        n = rejected.num_rows
        extra = {
            C.ENTITIES: pa.array([[]] * n, pa.list_(C.ENTITY_TYPE)),
            C.STATUS: pa.array([C.STATUS_REJECTED] * n, pa.string()),
            C.MODEL_NAME: pa.array([model_name] * n, pa.string()),
            C.MODEL_FINGERPRINT: pa.array([fingerprint] * n, pa.string()),
        }
        for name, values in extra.items():
            rejected = rejected.append_column(name, values)
        parts.append(rejected)
    head = parts[0].schema if annotated is not None else pa.schema(C.OUTPUT_HEAD)
    fields = [pa.field(f.name, f.type, nullable=f.name != C.DOC_ID) for f in head]
    names = {f.name for f in fields}
    for field in [*C.OUTPUT_HEAD, *C.PROVENANCE, *EXTRA]:
        if field.name not in names:
            fields.append(pa.field(field.name, field.type))
            names.add(field.name)
    ordered = [f for f in fields if f.name not in {e.name for e in EXTRA}] + list(EXTRA)
    schema = pa.schema(ordered)
    table = pa.concat_tables([conform(part, schema) for part in parts])
    return table.sort_by(C.DOC_ID)


def expire(store: str, keep_versions: int, storage_options: dict | None = None) -> list[str]:
    """Keep the last ``keep_versions`` run versions readable; delete files only older ones use.

    ``vacuum`` with zero retention except for the kept versions, then a checkpoint
    and log clean-up (log entries go after the table's ``delta.logRetentionDuration``).
    Returns the files vacuum removed. ``vacuum`` records itself as two versions
    (VACUUM START and END) when it has anything to remove; they change no rows and
    carry no run_id.
    """
    table = DeltaTable(table_uri(store), storage_options=storage_options)
    kept = sorted(committed_runs(table).values())[-keep_versions:]
    kept = sorted({*kept, table.version()})
    options = dict(retention_hours=0, enforce_retention_duration=False, keep_versions=kept)
    if not table.vacuum(dry_run=True, **options):
        return []
    removed = table.vacuum(dry_run=False, **options)
    table.create_checkpoint()
    table.cleanup_metadata()
    return removed


def history(store: str, storage_options: dict | None = None) -> list[dict]:
    """The runs committed to the table, newest first: version, run_id, counts."""
    table = open_table(store, storage_options)
    out = []
    for entry in table.history() if table is not None else []:
        if entry.get(RUN_KEY):
            counts = json.loads(entry.get(COUNTS_KEY) or "{}")
            out.append({"version": entry["version"], RUN_KEY: entry[RUN_KEY], COUNTS_KEY: counts})
    return out

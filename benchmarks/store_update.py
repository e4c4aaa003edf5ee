"""Store update cost: applying U changed rows to a Delta store of N documents vs rewriting it.

.venv/bin/python -m benchmarks.store_update [--documents 1000000] [--changes 1000]

Builds a store of N synthetic annotation rows directly (no model: three entities
per row, a fake model fingerprint), sorted by doc_id and capped at
``--target-file-mb`` per file as the job writes it, then times, each on a fresh copy:

- ``rewrite``: overwriting the whole table with N rows (what a full re-annotation commits);
- ``new``: U new documents (ids past the stored ones), through :func:`annotation.commit.commit`;
- ``clustered``: U/2 edited recent documents and U/2 new ones;
- ``scattered``: U edits at uniformly random ids.

Prints seconds, files rewritten and the ratio to ``rewrite``. delta-rs writes no
deletion vectors, so a commit rewrites every file holding a changed row: scattered
edits touch most files, and cost about as much as a rewrite.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from annotation import store
from annotation.commit import commit
from annotation.config import CONTENT_HASH
from ner import columns as C


def synthetic_entities(n: int, k: int = 3) -> pa.ListArray:
    """``k`` entities for each of ``n`` rows, built column by column (no Python object per row)."""
    cycle = np.arange(n * k)
    entities = pa.StructArray.from_arrays(
        [
            pa.array((cycle % 500).astype(np.int32)),
            pa.array((cycle % 500 + 6).astype(np.int32)),
            pc.take(pa.array(["Chemical", "Protein", "Taxon"]), pa.array(cycle % 3)),
            pc.take(pa.array(["aspirin", "p53", "human"]), pa.array(cycle % 3)),
            pa.array(np.full(n * k, 0.9, np.float32)),
            pc.take(pa.array(["title", "abstract"]), pa.array(cycle % 2)),
            pa.nulls(n * k, pa.string()),
            pa.array(np.zeros(n * k, dtype=bool)),
        ],
        fields=list(C.ENTITY_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, np.int32)), entities)


def synthetic_rows(ids: np.ndarray, tag: str) -> pa.Table:
    """Annotation rows for ``ids``, three entities each."""
    n = len(ids)
    doc_ids = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 9, "0")
    annotated = pa.table(
        {
            C.DOC_ID: doc_ids,
            C.ENTITIES: synthetic_entities(n),
            C.STATUS: pa.repeat(pa.scalar(C.STATUS_OK), n),
            C.MODEL_NAME: pa.repeat(pa.scalar("synthetic"), n),
            C.MODEL_FINGERPRINT: pa.repeat(pa.scalar(f"sha256:{tag}"), n),
            C.RUN_ID: pa.repeat(pa.scalar(tag), n),
            C.ANNOTATED_AT: pa.nulls(n, pa.timestamp("us", tz="UTC")),
            CONTENT_HASH: pc.binary_join_element_wise(doc_ids, pa.scalar(tag), "-"),
            store.SETTINGS_FINGERPRINT: pa.repeat(pa.scalar("sha256:settings"), n),
        }
    )
    return store.table_rows(annotated, None, "synthetic", f"sha256:{tag}")


def _timed_commit(path: Path, rows: pa.Table, target_file_mb: int) -> tuple[float, dict]:
    base = DeltaTable(str(path))
    started = time.perf_counter()
    commit(str(path), base, rows, metadata={store.RUN_KEY: "bench"}, target_file_mb=target_file_mb)
    seconds = time.perf_counter() - started
    return seconds, DeltaTable(str(path)).history(1)[0]["operationMetrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--target-file-mb", type=int, default=32)
    args = parser.parse_args()
    n, u = args.documents, args.changes
    root = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        base = synthetic_rows(np.arange(n), "r1")
        table = root / "base"
        write_deltalake(str(table), base, target_file_size=args.target_file_mb << 20)
        files = len(DeltaTable(str(table)).file_uris())
        size = sum(Path(p).stat().st_size for p in DeltaTable(str(table)).file_uris()) / 2**20
        print(f"store: {n:,} documents, {files} file(s), {size:.0f} MiB; U = {u:,} changes")

        started = time.perf_counter()
        write_deltalake(
            str(table), base, mode="overwrite", target_file_size=args.target_file_mb << 20
        )
        rewrite = time.perf_counter() - started
        print(f"{'rewrite':>10}: {rewrite:7.2f} s  (all {files} files)")
        rng = np.random.default_rng(0)
        cases = {
            "new": np.arange(n, n + u),
            "clustered": np.arange(n - u // 2, n + u - u // 2),
            "scattered": np.sort(rng.choice(n, u, replace=False)),
        }
        for name, ids in cases.items():
            copy = root / name
            shutil.copytree(table, copy)
            seconds, metrics = _timed_commit(copy, synthetic_rows(ids, "r2"), args.target_file_mb)
            print(
                f"{name:>10}: {seconds:7.2f} s  ratio {seconds / rewrite:.3f}; files rewritten "
                f"{metrics.get('num_target_files_removed', 0)} of {files}, added {metrics.get('num_target_files_added', 0)}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

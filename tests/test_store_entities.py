"""A store written before the entity struct gained ``section`` and ``via_abbreviation`` (#31).

Real local Delta tables: the old store is written with the old six-field struct, as
runs before the change wrote it, and then takes an update (MERGE), a full rewrite of
the workers' files and a ``replace_all`` commit.
"""

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from annotation import commit as K
from annotation import store
from annotation.config import CONTENT_HASH
from ner import columns as C

OLD_ENTITY = pa.struct([f for f in C.ENTITY_TYPE if f.name not in C.ENTITY_ADDED])


def _entity(start, section=None, old=False):
    entity = dict(start=start, end=start + 3, label="Chemical", text="abc", score=0.9)
    entity["column"] = "text"
    return entity if old else entity | dict(section=section, via_abbreviation=False)


def _rows(ids, entities, entity_type, run_id):
    n = len(ids)
    return pa.table(
        {
            C.DOC_ID: pa.array(ids, pa.string()),
            C.ENTITIES: pa.array(entities, pa.list_(entity_type)),
            C.STATUS: pa.array([C.STATUS_OK] * n),
            C.MODEL_NAME: pa.array(["tiny"] * n),
            C.MODEL_FINGERPRINT: pa.array(["fp1"] * n),
            C.RUN_ID: pa.array([run_id] * n),
            C.ANNOTATED_AT: pa.array([None] * n, pa.timestamp("us", tz="UTC")),
            CONTENT_HASH: pa.array([f"h{i}" for i in ids]),
            store.SETTINGS_FINGERPRINT: pa.array(["s1"] * n),
        }
    )


def _old_store(path):
    """A store as runs before #31 wrote it: the old struct, a null list, an empty one."""
    old = [[_entity(0, old=True), _entity(5, old=True)], [], None]
    rows = _rows(["1", "2", "3"], old, OLD_ENTITY, "r1")
    meta = {store.RUN_KEY: "r1", store.COUNTS_KEY: "{}"}
    write_deltalake(str(path), rows, commit_properties=K._properties(meta))
    assert K._older_entities(pa.schema(DeltaTable(str(path)).schema().to_arrow()))


def _new_rows(ids, run_id="r2"):
    return _rows(ids, [[_entity(7, "RESULTS")] for _ in ids], C.ENTITY_TYPE, run_id)


def _by_id(path):
    return {r[C.DOC_ID]: r[C.ENTITIES] for r in store.read_store(str(path)).to_pylist()}


def _entity_type(path):
    return pa.schema(DeltaTable(str(path)).schema().to_arrow()).field(C.ENTITIES).type


def test_an_update_merges_into_an_old_store_after_one_evolution_version(tmp_path):
    _old_store(tmp_path)
    base = store.open_table(str(tmp_path))
    meta = {store.RUN_KEY: "r2", store.COUNTS_KEY: "{}"}
    version = K.commit(str(tmp_path), base, _new_rows(["2", "4"]), ["3"], metadata=meta)
    assert version == 2  # 1: the struct evolved, 2: the run's MERGE
    assert _entity_type(tmp_path) == pa.list_(C.ENTITY_TYPE)
    entities = _by_id(tmp_path)
    assert sorted(entities) == ["1", "2", "4"]
    # The rows the run did not touch keep their entities, with the new fields null/false.
    assert [(e["start"], e["section"], e["via_abbreviation"]) for e in entities["1"]] == [
        (0, None, False),
        (5, None, False),
    ]
    assert [(e["start"], e["section"]) for e in entities["2"]] == [(7, "RESULTS")]
    assert [e["section"] for e in entities["4"]] == ["RESULTS"]
    # The evolution is no run's version; the runs keep theirs, and the old one reads as before.
    assert store.committed_runs(store.open_table(str(tmp_path))) == {"r1": 0, "r2": 2}
    old = store.read_store(str(tmp_path), version=0).to_pylist()
    assert [e["start"] for e in old[0][C.ENTITIES]] == [0, 5]
    # A second update finds the current struct: no evolution version again.
    base = store.open_table(str(tmp_path))
    assert K.commit(str(tmp_path), base, _new_rows(["1"], "r3"), [], metadata=meta) == 3


def test_a_full_rewrite_of_workers_files_replaces_an_old_store(tmp_path):
    table_dir, staged = tmp_path / "store", tmp_path / "store" / "_staging"
    _old_store(table_dir)
    staged.mkdir()
    pq.write_table(_new_rows(["1", "5"]), staged / "part-0.parquet")
    meta = {store.RUN_KEY: "r2", store.COUNTS_KEY: "{}"}
    version = K.commit_files(
        str(table_dir),
        store.open_table(str(table_dir)),
        pafs.LocalFileSystem(),
        [str(staged / "part-0.parquet")],
        "r2",
        metadata=meta,
    )
    assert version == 1 and _entity_type(table_dir) == pa.list_(C.ENTITY_TYPE)
    assert {k: [e["section"] for e in v] for k, v in _by_id(table_dir).items()} == {
        "1": ["RESULTS"],
        "5": ["RESULTS"],
    }


def test_a_replace_all_commit_overwrites_an_old_store(tmp_path):
    _old_store(tmp_path)
    base = store.open_table(str(tmp_path))
    meta = {store.RUN_KEY: "r2", store.COUNTS_KEY: "{}"}
    K.commit(str(tmp_path), base, _new_rows(["9"]), [], replace_all=True, metadata=meta)
    assert _entity_type(tmp_path) == pa.list_(C.ENTITY_TYPE)
    assert [e["section"] for e in _by_id(tmp_path)["9"]] == ["RESULTS"]

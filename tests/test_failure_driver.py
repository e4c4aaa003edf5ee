"""SIGKILL the job's driver at chosen points, rerun, and get exactly the clean run's output.

The jobs run as real processes (`python -m jobs.annotate`, `python -m jobs.reprocess`)
with their own local Ray cluster. ``NER_FAILPOINTS`` makes the driver SIGKILL
itself at a named point (:mod:`plumbing.failpoints`); its whole process group, Ray
included, is then killed and reaped. Points:

- ``annotate.before_pipeline``: after planning, before the first write;
- ``annotate.after_file:3``: the third file is written, others are being written;
- ``annotate.before_manifest``: every file written, progress (the manifest) not;
- ``reprocess.before_annotate`` / ``reprocess.before_commit``: the same for the
  reprocessing job, whose run reaches the store's Delta table in one commit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from annotation.store import history, read_store
from tests.failure_support import (
    content_checksum,
    doc_ids,
    docs,
    run_job,
    shutdown_in_process_ray,
    write_corpus,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

CORPUS = {"part-a.parquet": docs(0, 25), "part-b.parquet": docs(25, 25)}
COMMON = [
    "id_column=pmid",
    "text_columns=[title,abstract]",
    "max_length=32",
    "stride=8",
    "tokenize_batch_size=5",
    "classify_batch_size=5",
    "write_batch_size=5",  # 10 files, so a kill can land between writes
    "classifier_concurrency=[1,1]",
    "num_cpus=2",
    "progress_bars=false",
    "dashboard=false",  # fifteen local clusters start here: each a few seconds sooner
]


@pytest.fixture(scope="module")
def setup(_ray_session, tiny_model_dir, tmp_path_factory):
    shutdown_in_process_ray()
    root = tmp_path_factory.mktemp("driver")
    corpus = write_corpus(root / "corpus", CORPUS)
    model = f"model={tiny_model_dir}"
    clean = root / "clean"
    code, output = run_job(
        "jobs.annotate",
        ["--config", "configs/annotate_cpu.yaml", model, f"input={corpus}", f"output={clean}"]
        + COMMON,
    )
    assert code == 0, output
    return root, corpus, model, _annotate_output(clean)


def _annotate_output(output: Path) -> tuple[list, str]:
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["balanced"]
    tables = [pq.read_table(path) for path in manifest["files"]]
    on_disk = sorted(str(p) for p in output.glob("*.parquet"))
    assert on_disk == sorted(manifest["files"])  # nothing beside what the manifest lists
    return doc_ids(tables), content_checksum(tables)


@pytest.mark.parametrize(
    "point", ["annotate.before_pipeline", "annotate.after_file:3", "annotate.before_manifest"]
)
def test_annotate_rerun_after_driver_kill_is_exactly_once(setup, point):
    root, corpus, model, (clean_ids, clean_checksum) = setup
    output = root / f"killed-{point.replace(':', '-')}"
    args = ["--config", "configs/annotate_cpu.yaml", model, f"input={corpus}", f"output={output}"]
    args += [*COMMON, "run_id=nightly-1"]

    code, log = run_job("jobs.annotate", args, failpoints=point)
    assert code == -9 and f"failpoint {point.split(':')[0]}" in log, log
    assert not (output / "_manifest.json").exists()  # the run is not complete to any reader
    written = sorted(output.glob("*.parquet"))
    if point == "annotate.before_pipeline":
        assert written == []
    else:
        assert written and all(not p.name.startswith(".tmp-") for p in written)

    code, log = run_job("jobs.annotate", args)
    assert code == 0, log
    assert "rows_in 50 == rows_out 50 + rows_rejected 0: OK" in log
    if point == "annotate.before_manifest":  # all written: the rerun loads no model
        assert "50 documents are already written" in log and "annotating" not in log
    elif point == "annotate.after_file:3":
        assert "resuming run nightly-1" in log
    ids, checksum = _annotate_output(output)
    assert ids == clean_ids == sorted(str(i) for i in range(50))
    assert checksum == clean_checksum


# --- the reprocessing job: a reader never sees half a run ----------------------


@pytest.fixture(scope="module")
def stores(setup):
    """A store with one version of the corpus, and the corpus with 10 new and 5 edited docs."""
    root, corpus, model, _ = setup
    base = root / "store-base"
    code, log = run_job(
        "jobs.reprocess",
        ["--config", "configs/reprocess_cpu.yaml", model, f"input={corpus}", f"store={base}"]
        + COMMON,
    )
    assert code == 0, log
    changed = write_corpus(
        root / "corpus-v2",
        {
            "part-a.parquet": docs(0, 5, edited=True) + docs(5, 20),
            "part-b.parquet": docs(25, 25),
            "part-c.parquet": docs(50, 10),
        },
    )
    clean = root / "store-clean"
    shutil.copytree(base, clean)
    code, log = run_job("jobs.reprocess", _reprocess_args(model, changed, clean))
    assert code == 0, log
    assert "annotated 15" in log
    return base, changed, model, content_checksum([read_store(str(clean))])


def _reprocess_args(model: str, corpus: Path, store: Path) -> list[str]:
    return [
        "--config",
        "configs/reprocess_cpu.yaml",
        model,
        f"input={corpus}",
        f"store={store}",
        *COMMON,
    ]


@pytest.mark.parametrize(
    "point",
    ["reprocess.before_annotate", "annotate.after_file:2", "reprocess.before_commit"],
)
def test_reprocess_driver_kill_leaves_the_last_version_and_the_rerun_commits_once(
    stores, tmp_path, point
):
    base, changed, model, clean_checksum = stores
    store = tmp_path / "store"
    shutil.copytree(base, store)
    before = DeltaTable(str(store)).version()
    before_checksum = content_checksum([read_store(str(store))])

    code, log = run_job("jobs.reprocess", _reprocess_args(model, changed, store), failpoints=point)
    assert code == -9, log
    # A reader still sees the previous version, whole and unchanged.
    assert DeltaTable(str(store)).version() == before and len(history(str(store))) == 1
    assert content_checksum([read_store(str(store))]) == before_checksum

    code, log = run_job("jobs.reprocess", _reprocess_args(model, changed, store))
    assert code == 0, log
    assert "resuming" in log
    assert DeltaTable(str(store)).version() == before + 1  # one commit for the run
    assert [run["version"] for run in history(str(store))] == [before + 1, before]
    table = read_store(str(store))
    assert doc_ids([table]) == sorted(str(i) for i in range(60))
    assert content_checksum([table]) == clean_checksum

"""The documented path for users: `ray start --head` -> `ray job submit` -> check -> `ray stop`.

A real local cluster with Ray 2.60's token authentication, driven by Ray's own CLI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(_ray_session):
    import ray

    if ray.is_initialized():  # one Ray instance per machine at a time keeps drivers unambiguous
        ray.shutdown()
    dashboard = _free_port()
    env = dict(os.environ)
    # The job's `python` must be this environment's, as after `source .venv/bin/activate`.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    env.pop("RAY_ADDRESS", None)
    started = _ray(
        "start", "--head", f"--port={_free_port()}", "--num-cpus=2",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    try:
        yield env
    finally:
        stopped = _ray("stop", "--force", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def submit(env: dict, *command: str) -> subprocess.CompletedProcess:
    return _ray("job", "submit", f"--working-dir={ROOT}", "--", *command, env=env, timeout=600)


def test_submitted_training_job_succeeds_and_exports(cluster, craft_dataset, tmp_path):
    done = submit(
        cluster,
        "python", "-m", "jobs.train", "--config", "configs/train_smoke.yaml",
        f"dataset={craft_dataset}", f"storage_path={tmp_path}", "name=submitted",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    console = done.stdout
    # one line per epoch, printed once, and none of the libraries' noise
    assert console.count("epoch 1/2  train loss") == 1, console[-3000:]
    assert console.count("epoch 2/2  train loss") == 1, console[-3000:]
    assert "Protein" in console and "Taxon" in console
    for noise in ("TrainingReport(", "Failed to query", "RayTrainWorker pid", "LOAD REPORT"):
        assert noise not in console, noise
    assert "best epoch" in console and "steps: " in console
    export = next(x for x in console.splitlines() if x.startswith("model: "))[len("model: ") :]
    assert (Path(export.strip()) / "model.safetensors").is_file()


def test_submitted_annotation_job_writes_one_row_per_document(cluster, tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    ids = [f"pmid-{i}" for i in range(12)]
    texts = [f"Mouse cells {i} express p53 and insulin." for i in range(12)]
    pq.write_table(pa.table({"pmid": ids, "abstract": texts}), corpus / "part-0.parquet")
    out = tmp_path / "annotations"
    done = submit(
        cluster,
        "python", "-m", "jobs.annotate", "--config", "configs/annotate_cpu.yaml",
        f"input={corpus}", f"output={out}", f"model={tiny_model_dir}",
        "text_columns=[abstract]", "progress_bars=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rows_in 12 == rows_out 12 + rows_rejected 0: OK" in done.stdout
    table = pq.read_table(out, columns=["doc_id", "entities"])
    assert sorted(table.column("doc_id").to_pylist()) == sorted(ids)
    by_id = dict(zip(ids, texts, strict=True))
    for row in table.to_pylist():
        assert all(
            by_id[row["doc_id"]][e["start"] : e["end"]] == e["text"] for e in row["entities"]
        )

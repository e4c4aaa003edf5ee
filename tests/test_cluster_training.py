"""Node loss during training on a real multi-node Ray cluster, on one machine.

Two Ray Train workers on two worker nodes (``failure_support.local_cluster``), held
there by a custom resource. Mid-way through the second epoch one node is removed,
all its processes at once, and a replacement joins: Ray Train must restart the
worker group from the first epoch's checkpoint and finish with the clean run's step
count and model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobs.train import run
from plumbing.failpoints import ENV as FAILPOINTS_ENV
from plumbing.failpoints import WAIT_DIR_ENV
from tests.failure_support import local_cluster
from tests.test_train_job import _weights, smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TRAIN = "trainer"  # the custom resource of the nodes that may host a worker
WORKER_NODE = dict(num_cpus=1, resources={TRAIN: 1})


@pytest.fixture(scope="module")
def cluster(_ray_session):
    """A 1-CPU head (the driver and Ray Train's controller) and two 1-CPU worker nodes."""
    with local_cluster(dict(num_cpus=1), [WORKER_NODE, WORKER_NODE]) as (cluster, nodes):
        yield cluster, nodes


def _config(root: Path, craft_dataset, name: str):
    return smoke_config(
        root, craft_dataset, f"name={name}", "num_workers=2", "cpus_per_worker=1", "batch_size=4",
        f"worker_resources={{{TRAIN}: 1}}", "max_failures=2",
    )  # fmt: skip


def test_losing_a_worker_node_mid_epoch_resumes_from_the_checkpoint(
    cluster, craft_dataset, tmp_path, monkeypatch
):
    cluster_, nodes = cluster
    clean, clean_export, _ = run(_config(tmp_path / "clean", craft_dataset, "clean"))
    steps = clean.metrics["global_step"]

    # Each worker stops at the same step half-way through the second epoch and leaves a
    # marker; the node goes once a marker is there. The restarted workers are new
    # processes that run only the second epoch's steps, so they never reach it.
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(FAILPOINTS_ENV, f"train.after_step:{steps * 3 // 4}:wait")
    monkeypatch.setenv(WAIT_DIR_ENV, str(markers))
    cfg = _config(tmp_path / "lost", craft_dataset, "lost")
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"], outcome["export"], _ = run(cfg)
        except BaseException as err:  # reported below, in the test's thread
            outcome["error"] = err

    # Training runs in a thread: adding a node starts processes, which Ray does from
    # the main thread only.
    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    deadline = time.monotonic() + 300
    while not any(markers.iterdir()):
        assert trainer.is_alive(), f"training ended before the failpoint: {outcome}"
        assert time.monotonic() < deadline, "no worker reached the failpoint in 300 s"
        time.sleep(0.1)
    # Directories only: Ray Train also writes checkpoint_manager_snapshot.json there,
    # at a moment that races this look.
    checkpoints_then = [p for p in (tmp_path / "lost" / "lost").glob("checkpoint_*") if p.is_dir()]
    cluster_.remove_node(nodes[0], allow_graceful=False)
    cluster_.add_node(**WORKER_NODE)
    trainer.join(timeout=600)
    assert not trainer.is_alive(), "training did not finish within 600 s of the node loss"

    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert len(checkpoints_then) == 1  # the loss fell in the second epoch
    assert result.error is None
    assert result.metrics["resumed"] == 1  # a new worker group, restored from the checkpoint
    assert result.metrics["epoch"] == cfg.epochs
    assert result.metrics["global_step"] == steps  # resumed at the epoch boundary
    assert result.metrics["train_loss"] == pytest.approx(clean.metrics["train_loss"], rel=1e-5)
    assert result.metrics["devel_f1"] == pytest.approx(clean.metrics["devel_f1"], abs=1e-9)
    clean_w, lost_w = _weights(clean_export), _weights(outcome["export"])
    assert clean_w.keys() == lost_w.keys()
    for name, tensor in clean_w.items():
        gap = (tensor - lost_w[name]).abs().max().item()
        assert gap < 1e-5, f"{name} differs from the clean run's by {gap}"

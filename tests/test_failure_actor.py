"""Kill a model actor (its process, by pid) in the middle of an annotation run.

Ray Data restarts a dead actor of a pool and retries the batches it held; the
writer names each file after its rows, so a retried write replaces rather than
adds. The run must end with exactly the input's ids and the clean run's content.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from ner.model import save_tiny_model
from tests.failure_support import docs, read_output, small_batch_config, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_DOCS = 240
CLASSIFIER = "TokenClassifierStage"


def _classifier_pids() -> set[int]:
    """Processes of the classifier pool: Ray titles each actor after its class."""
    pids = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::") and CLASSIFIER in cmdline:
            pids.add(proc.info["pid"])
    return pids


@pytest.fixture(scope="module")
def setup(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("actor")
    # A model heavy enough that the classifier is the slow stage, so work is queued
    # for it when it dies.
    model = save_tiny_model(
        root / "model", hidden_size=128, num_hidden_layers=4, intermediate_size=512
    )
    long_docs = [(i, t, " ".join([a] * 6)) for i, t, a in docs(0, N_DOCS)]
    corpus = write_corpus(
        root / "corpus",
        {"a.parquet": long_docs[: N_DOCS // 2], "b.parquet": long_docs[N_DOCS // 2 :]},
    )
    return root, corpus, model


def _config(corpus, output, model) -> AnnotateConfig:
    return small_batch_config(corpus, output, model, run_id="actor-test")


def test_killing_a_classifier_actor_mid_run_loses_and_duplicates_nothing(setup):
    root, corpus, model = setup
    clean = run_annotate(_config(corpus, root / "clean", model))
    clean_ids, clean_checksum = read_output(clean)
    assert clean_ids == sorted(str(i) for i in range(N_DOCS))

    killed: list[psutil.Process] = []
    files_after_kill: list[str] = []

    def on_stats(row: dict) -> None:
        if killed:
            files_after_kill.append(row["file"])
            return
        victims = _classifier_pids()
        assert len(victims) == 1, f"expected one classifier actor, found {victims}"
        victim = psutil.Process(victims.pop())
        os.kill(victim.pid, signal.SIGKILL)
        killed.append(victim)

    summary = run_annotate(_config(corpus, root / "killed", model), on_stats=on_stats)
    assert killed
    # The kill came after the first of 24 files: most of the run was still ahead.
    assert len(files_after_kill) >= N_DOCS // 10 - 2
    assert summary.balanced and summary.rows_out == N_DOCS and summary.duplicate_ids == 0
    ids, checksum = read_output(summary)
    assert ids == clean_ids
    assert checksum == clean_checksum
    # Same pid and start time: is_running() is False once the killed process is gone,
    # even if its pid was reused by a new worker. SIGKILL is delivered at once, but the
    # kernel tears the process down asynchronously: on a loaded machine the run can end
    # before that is done, so wait for it (bounded).
    deadline = time.monotonic() + 30
    while not _dead(killed[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(killed[0])


def _dead(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # gone between the two questions
        return True

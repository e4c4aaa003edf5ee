"""Node loss during annotation on a real multi-node Ray cluster, on one machine.

The cluster is ``failure_support.local_cluster``: separate raylets with their own
CPUs, custom resources and object stores. Removing a node with
``allow_graceful=False`` kills its raylet and every worker process on it at once,
the way a spot reclaim does; its objects are lost with it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from tests.failure_support import docs, local_cluster, read_output, small_batch_config, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

N_DOCS = 200
CLASSIFY = "classify"  # the custom resource of the nodes that may host the model


@pytest.fixture(scope="module")
def cluster(_ray_session):
    """Head and two workers: one that may host the model, one not.

    Ray Data spreads the actors over the nodes, and its file listing needs one whole
    free CPU on some node, so the head and the plain node have two (logical) CPUs.
    """
    head = dict(num_cpus=2, resources={"head": 1})
    nodes = [dict(num_cpus=1, resources={CLASSIFY: 1}), dict(num_cpus=2, resources={"plain": 1})]
    with local_cluster(head, nodes) as (cluster, (model_node, _)):
        yield cluster, model_node


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cluster")
    long_docs = [(i, t, " ".join([a] * 4)) for i, t, a in docs(0, N_DOCS)]
    halves = {"a.parquet": long_docs[: N_DOCS // 2], "b.parquet": long_docs[N_DOCS // 2 :]}
    return root, write_corpus(root / "corpus", halves), tiny_model_dir


def _config(corpus, output, model, run_id: str) -> AnnotateConfig:
    return small_batch_config(
        corpus, output, model, classifier_resources={CLASSIFY: 1}, run_id=run_id
    )


def _read(summary):
    """Ids and checksum of the run's files, which must be all the output folder holds."""
    output = Path(summary.files[0]).parent
    written = sorted(
        str(p) for p in output.rglob("*") if p.is_file() and p.name != "_manifest.json"
    )
    assert written == sorted(summary.files + summary.rejected_files)  # no half-written leftovers
    return read_output(summary)


def test_losing_the_model_node_mid_run_loses_and_duplicates_nothing(cluster, corpus):
    cluster_, model_node = cluster
    root, corpus_dir, model = corpus
    clean = run_annotate(_config(corpus_dir, root / "clean", model, "clean"))
    clean_ids, clean_checksum = _read(clean)
    assert clean_ids == sorted(str(i) for i in range(N_DOCS))

    output = root / "lost"
    _wait_until_free(CLASSIFY)  # the clean run's classifier has let go of its node
    # The run goes in a thread: adding a node starts processes, which Ray does from
    # the main thread only. Ray Data restarts the lost actor on the new node,
    # resubmits its batches and rebuilds lost blocks, so the run usually completes.
    # A loss while Ray Data still lists the input can kill its Parquet footer reader,
    # which it does not retry: then the run fails, and a rerun with the same run_id
    # must finish it, exactly once (what the issue allows).
    config = _config(corpus_dir, output, model, "node-loss")
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = run_annotate(config)
        except BaseException as err:  # the rerun below handles it
            result["error"] = err

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    loss_at = _lose_the_model_node(cluster_, model_node, output)
    runner.join(timeout=300)
    assert not runner.is_alive(), "the run did not finish within 300 s of the node loss"
    summary = result.get("summary") or run_annotate(config)
    # The node went while the classifier held its CLASSIFY unit and most files were
    # still to come: the loss hit a live model mid-run, not a finished run.
    assert loss_at["classify_free"] == 0.0
    assert loss_at["files"] < len(summary.files) // 2
    assert summary.balanced and summary.rows_in == summary.rows_out + summary.rows_rejected
    ids, checksum = _read(summary)
    assert ids == clean_ids  # every input id exactly once
    assert checksum == clean_checksum


def _lose_the_model_node(cluster, model_node, output: Path, deadline_s: float = 120) -> dict:
    """Once the classifier actor holds the model node's CLASSIFY unit (it is up, with
    the run's batches coming to it), remove that node, all its processes at once, and
    add a replacement. The driver's stats rows are no signal: Ray Data runs ahead of
    the driver, which may read its first row after the pipeline has finished."""
    import ray

    deadline = time.monotonic() + deadline_s
    while ray.available_resources().get(CLASSIFY, 0.0) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    record = {
        "classify_free": ray.available_resources().get(CLASSIFY, 0.0),
        "files": len(list(output.glob("*.parquet"))),
    }
    cluster.remove_node(model_node, allow_graceful=False)
    cluster.add_node(num_cpus=1, resources={CLASSIFY: 1})
    return record


def _wait_until_free(resource: str, deadline_s: float = 60) -> None:
    import ray

    deadline = time.monotonic() + deadline_s
    while ray.available_resources().get(resource, 0.0) < 1:
        assert time.monotonic() < deadline, f"{resource} still held {deadline_s} s after the run"
        time.sleep(0.1)

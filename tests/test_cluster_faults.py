"""Cluster-scale faults on a real multi-node Ray cluster, on one machine.

``ray.cluster_utils.Cluster`` starts a head node and worker nodes as separate raylets
with their own CPUs, custom resources and object stores, as Ray's own tests do.
Removing a node with ``allow_graceful=False`` kills its raylet and every worker
process on it at once, the way a spot reclaim does; its objects are lost with it.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from tests.failure_support import (
    content_checksum,
    doc_ids,
    docs,
    shutdown_in_process_ray,
    write_corpus,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

N_DOCS = 200
CLASSIFY = "classify"  # the custom resource of the nodes that may host the model


@pytest.fixture(scope="module")
def cluster(_ray_session):
    """Head (1 CPU: driver-side tasks) and two workers: one that may host the model, one not."""
    import ray
    from ray.cluster_utils import Cluster

    shutdown_in_process_ray()
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=1, resources={"head": 1}, include_dashboard=False),
    )
    model_node = cluster.add_node(num_cpus=1, resources={CLASSIFY: 1})
    cluster.add_node(num_cpus=1, resources={"plain": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, model_node
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cluster")
    long_docs = [(i, t, " ".join([a] * 4)) for i, t, a in docs(0, N_DOCS)]
    halves = {"a.parquet": long_docs[: N_DOCS // 2], "b.parquet": long_docs[N_DOCS // 2 :]}
    return root, write_corpus(root / "corpus", halves), tiny_model_dir


def _config(corpus, output, model, run_id: str) -> AnnotateConfig:
    return AnnotateConfig(
        input=[str(corpus)],
        output=str(output),
        model=str(model),
        id_column="pmid",
        text_columns=["title", "abstract"],
        max_length=64,
        stride=16,
        tokenize_batch_size=10,
        classify_batch_size=10,
        token_budget=512,
        write_batch_size=10,
        classifier_concurrency=[1, 1],
        classifier_resources={CLASSIFY: 1},
        progress_bars=False,
        run_id=run_id,
    )


def _read(summary):
    tables = [pq.read_table(path) for path in summary.files]
    return doc_ids(tables), content_checksum(tables)


def test_losing_the_model_node_mid_run_loses_and_duplicates_nothing(cluster, corpus):
    cluster_, model_node = cluster
    root, corpus_dir, model = corpus
    clean = run_annotate(_config(corpus_dir, root / "clean", model, "clean"))
    clean_ids, clean_checksum = _read(clean)
    assert clean_ids == sorted(str(i) for i in range(N_DOCS))

    events: list[str] = []

    def on_stats(row: dict) -> None:
        # After the first file: the node hosting the classifier goes, all its processes
        # at once, with work queued for it; then a replacement node joins.
        if events:
            events.append(row["file"])
            return
        cluster_.remove_node(model_node, allow_graceful=False)
        cluster_.add_node(num_cpus=1, resources={CLASSIFY: 1})
        events.append("node replaced")

    config = _config(corpus_dir, root / "lost", model, "node-loss")
    try:
        summary = run_annotate(config, on_stats=on_stats)
    except Exception as err:  # the issue allows a rerun with the same run_id to finish
        events.append(f"run failed: {type(err).__name__}")
        summary = run_annotate(config)
    assert events and events[0] == "node replaced"
    assert summary.balanced and summary.rows_in == summary.rows_out + summary.rows_rejected
    ids, checksum = _read(summary)
    assert ids == clean_ids  # every input id exactly once
    assert checksum == clean_checksum

"""An annotation run that asks for resources no node has fails at once, naming them."""

import json
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.config import AnnotateConfig
from annotation.resources import actor_demands, check_cluster, release_resources, shortfall
from jobs.annotate import main
from plumbing.config import ClusterTooSmallError

CPU_NODE = {"CPU": 2.0, "memory": 1e9}
GPU_NODE = {"CPU": 16.0, "GPU": 1.0}


def demands(**overrides):
    config = AnnotateConfig(**({"classifier_num_cpus": 2.0} | overrides))
    return actor_demands(config, config.num_gpus_per_actor or 0)


def test_a_gpu_actor_on_cpu_nodes_names_the_gpu():
    reason = shortfall([CPU_NODE, CPU_NODE], demands(num_gpus_per_actor=1.0))
    assert "classifier actors need 2 CPU, 1 GPU each" in reason
    assert "no node has enough GPU" in reason


def test_actors_must_fit_on_one_node_not_on_the_sum_of_nodes():
    assert "no node has enough CPU" in shortfall(
        [CPU_NODE, CPU_NODE], demands(classifier_num_cpus=3.0)
    )
    assert shortfall([GPU_NODE], demands(classifier_num_cpus=3.0)) is None


def test_the_minimum_number_of_actors_must_start():
    two = demands(num_gpus_per_actor=1.0, classifier_concurrency=[2, 4])
    reason = shortfall([GPU_NODE], two)
    assert reason.startswith("2 classifier actors") and "no node" not in reason
    assert shortfall([GPU_NODE, GPU_NODE], two) is None
    assert (
        shortfall([GPU_NODE], demands(num_gpus_per_actor=0.5, classifier_concurrency=[2, 2]))
        is None
    )
    decoders = demands(cpu_stage_num_cpus=1.0, decode_concurrency=[3, 4])
    assert shortfall([CPU_NODE], decoders).startswith("3 decoder actors need 1 CPU each")


@pytest.fixture
def one_file(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"doc_id": ["1"], "text": ["Aspirin."]}), path)
    return path


@pytest.mark.integration
def test_the_job_exits_2_at_once_on_a_cluster_without_gpus(
    ray_local, one_file, tiny_model_dir, capsys
):
    result = {}
    args = [f"input={one_file}", f"output={one_file.parent / 'out'}", f"model={tiny_model_dir}",
            "num_gpus_per_actor=1", "device=cuda", "progress_bars=false"]  # fmt: skip
    # In a thread, so that the test fails at the deadline instead of hanging if the job waits.
    worker = threading.Thread(target=lambda: result.update(code=main(args)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the job waited for a GPU that no node has"
    assert result["code"] == 2
    err = capsys.readouterr().err
    assert "no node has enough GPU" in err and "resource_wait_s" in err


def requested(ray) -> list[dict]:
    """The bundles asked of the autoscaler, as the (v1) autoscaler reads them from the GCS."""
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL) or b"[]")


def wants_a_gpu(bundles: list[dict]) -> bool:
    return any(bundle.get("GPU") == 1.0 for bundle in bundles)


@pytest.mark.integration
def test_a_bounded_wait_for_an_autoscaler_ends_with_the_same_error(ray_local, monkeypatch):
    import annotation.resources as resources

    monkeypatch.setattr(resources, "POLL_S", 0.1)
    during = []
    nodes = resources.alive_nodes
    monkeypatch.setattr(
        resources, "alive_nodes", lambda ray: during.append(requested(ray)) or nodes(ray)
    )
    config = AnnotateConfig(num_gpus_per_actor=1.0, resource_wait_s=1.0)
    started = time.monotonic()
    with pytest.raises(ClusterTooSmallError, match="after waiting 1 s"):
        check_cluster(ray_local, config, 1.0)
    assert 1.0 <= time.monotonic() - started < 30
    assert wants_a_gpu(during[-1]), "the GPU node was not asked for while waiting"
    assert requested(ray_local) == [], "the GPU node stays requested after the job failed"


@pytest.mark.integration
def test_the_request_holds_until_the_run_releases_it(ray_local, monkeypatch):
    import annotation.resources as resources

    # The autoscaler "adds" a GPU node on the second look.
    added = iter([[CPU_NODE], [CPU_NODE, GPU_NODE]])
    monkeypatch.setattr(resources, "alive_nodes", lambda ray: next(added))
    monkeypatch.setattr(resources, "POLL_S", 0.0)
    check_cluster(ray_local, AnnotateConfig(num_gpus_per_actor=1.0, resource_wait_s=60.0), 1.0)
    assert wants_a_gpu(requested(ray_local)), "released before the actors were scheduled"
    release_resources()
    assert requested(ray_local) == []
    # Another job's request on the same cluster is not this run's to clear.
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1.0}])
    release_resources()
    assert requested(ray_local) == [{"GPU": 1.0}]
    request_resources(bundles=[])

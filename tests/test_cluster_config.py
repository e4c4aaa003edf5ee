"""cluster.yaml against Ray's own cluster-config schema; the KubeRay manifest's shape."""

from copy import deepcopy
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from annotation.cluster import worker_runtime_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema(cluster):
    validate_config(prepare_config(deepcopy(cluster)))


def test_cluster_yaml_describes_a_gpu_cluster_on_our_ray(cluster):
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert cluster["docker"]["image"].endswith("-gpu")
    workers = cluster["available_node_types"]["gpu_worker"]
    assert 0 < workers["min_workers"] <= workers["max_workers"]
    assert any("pip install" in command for command in cluster["setup_commands"])


def test_the_schema_check_catches_mistakes(cluster):
    broken = deepcopy(cluster)
    broken["max_workerz"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_workerz"):
        validate_config(prepare_config(broken))


def test_rayjob_manifest_matches_our_ray_and_entry_points():
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
    module = job["spec"]["entrypoint"].split()[2]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()


def test_rayjob_workers_trim_their_heap_as_a_local_clusters_do():
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env == worker_runtime_env(verbose=True, heap_trim_s=10)

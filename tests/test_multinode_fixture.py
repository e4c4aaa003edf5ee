"""The multi-node fixture gives what it promises: a head without CPUs, a 2-CPU worker
that does not see the head's disk (nor the head its), and S3 that both reach."""

from __future__ import annotations

import os
import uuid

import pyarrow.fs
import pytest
import ray

from tests import multinode

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# The module-scoped fixture, bound here by name so pytest finds it (an import of the
# name would read to ruff as unused and then redefined by each test's argument).
multinode_cluster = multinode.multinode_cluster


@ray.remote(num_cpus=1)
def _look(paths: list[str]) -> tuple[str, dict[str, bool]]:
    return ray.get_runtime_context().get_node_id(), {p: os.path.exists(p) for p in paths}


@ray.remote(num_cpus=1)
def _read_s3(s3, key: str) -> tuple[bytes, bytes]:
    """Read ``key`` through the server's S3FileSystem and through the node's AWS_* env."""
    with s3.filesystem().open_input_stream(f"{s3.bucket}/{key}") as f:
        explicit = f.read()
    from_env, path = pyarrow.fs.FileSystem.from_uri(s3.uri(key))
    with from_env.open_input_stream(path) as f:
        return explicit, f.read()


@ray.remote(num_cpus=1)
def _write_scratch(path: str) -> bool:
    with open(path, "w") as f:
        f.write("node-local")
    return os.path.exists(path)


def test_the_worker_has_the_cpus_and_runs_the_tasks(multinode_cluster):
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert set(nodes) == {multinode_cluster.head_node_id, multinode_cluster.worker_node_id}
    assert nodes[multinode_cluster.head_node_id]["Resources"].get("CPU", 0) == 0
    assert nodes[multinode_cluster.worker_node_id]["Resources"]["CPU"] == 2
    ran_on, _ = ray.get(_look.remote([]))
    assert ran_on == multinode_cluster.worker_node_id != multinode_cluster.head_node_id


def test_the_worker_sees_s3_but_not_the_heads_files(multinode_cluster, tmp_path):
    local = tmp_path / "on-the-head.txt"
    local.write_text("head only")
    key = f"fixture/{uuid.uuid4().hex}.txt"
    with multinode_cluster.s3.filesystem().open_output_stream(
        f"{multinode_cluster.s3.bucket}/{key}"
    ) as f:
        f.write(b"shared")

    _, seen = ray.get(_look.remote([str(local), str(multinode.ROOT / "pyproject.toml")]))
    assert seen == {str(local): False, str(multinode.ROOT / "pyproject.toml"): True}
    assert ray.get(_read_s3.remote(multinode_cluster.s3, key)) == (b"shared", b"shared")


def test_the_head_does_not_see_the_workers_scratch(multinode_cluster):
    path = multinode_cluster.scratch / f"{uuid.uuid4().hex}.txt"
    assert ray.get(_write_scratch.remote(str(path))) is True
    assert not path.exists()

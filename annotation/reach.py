"""Can every node reach the job's local paths? One line naming the path and the node if not.

On a cluster whose nodes have their own disks (every cluster that cluster.yaml
makes), a local path given to the driver (the input, the output, the model, a
reprocessing staging area) names a folder on the head node alone: the workers
would fail deep inside a task, or worse, write the output to their own disks.
Before the pipeline starts, a zero-CPU probe on each other node that can run work
checks that the paths exist there too. A path that every node sees (a shared
filesystem mounted at the same place) passes; URIs (``s3://``) are not probed.
"""

from __future__ import annotations

import os

from corpora.corpus import InputError

PROBE_TIMEOUT_S = 120.0


class PathNotSharedError(InputError):
    """A local path the job needs does not exist on a node that runs its tasks."""


def _exists(paths: list[str]) -> list[bool]:
    return [os.path.exists(path) for path in paths]


def check_reachable(ray, paths: dict[str, str]) -> None:
    """Raise :class:`PathNotSharedError` if a local path in ``paths`` is missing on a worker node.

    ``paths`` maps what a path is ("input", "model", ...) to the path. Only nodes
    other than the driver's, with CPUs or GPUs (a ``CPU: 0`` head runs no task),
    are probed; on a one-machine cluster nothing is.
    """
    local = {what: path for what, path in paths.items() if path and "://" not in path}
    if not local:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    driver = ray.get_runtime_context().get_node_id()
    nodes = [
        node
        for node in ray.nodes()
        if node.get("Alive")
        and node["NodeID"] != driver
        and node["Resources"].get("CPU", 0) + node["Resources"].get("GPU", 0) > 0
    ]
    if not nodes:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(_exists)
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(list(local.values()))
        for node in nodes
    ]
    for node, seen in zip(nodes, ray.get(refs, timeout=PROBE_TIMEOUT_S), strict=True):
        for (what, path), present in zip(local.items(), seen, strict=True):
            if not present:
                raise PathNotSharedError(
                    f"{what} {path} is not on node {node['NodeManagerAddress']} "
                    f"({node['NodeID'][:12]}), which runs this job's tasks: a local path must "
                    "be on every node (a shared filesystem); use an s3:// URI or such a path"
                )

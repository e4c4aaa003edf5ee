"""Can the cluster ever host the pipeline's actors? Fail now rather than wait for ever.

Ray Data waits, logging "the job may hang forever", when an actor asks for more
than any node has (``num_gpus_per_actor=1`` on a cluster without GPUs). Waiting is
right only where an autoscaler can add such nodes: ``resource_wait_s`` > 0 asks the
autoscaler for them and bounds the wait; 0 (the default) fails at once.

The request stands until it is withdrawn (Ray's ``request_resources`` is persistent),
and while it stands the autoscaler keeps the nodes it added. It must hold until the
actors are scheduled, so a successful wait keeps it and the run's caller withdraws it
with :func:`release_resources` when the run ends; a failed wait withdraws it at once.
"""

from __future__ import annotations

import math
import time

from annotation.config import AnnotateConfig
from plumbing.config import ClusterTooSmallError

POLL_S = 5.0
# Whether this process has an autoscaler request standing, so that releasing never
# clears a request another job on the same cluster made.
_requested = False


def actor_demands(config: AnnotateConfig, num_gpus: float) -> list[tuple[str, dict, int]]:
    """(what, resources of one actor, actors that must start) for each actor pool."""
    classifier = {"CPU": config.classifier_num_cpus, "GPU": num_gpus, **config.classifier_resources}
    return [
        ("classifier actors", {k: v for k, v in classifier.items() if v}, config.classifier_concurrency[0]),
        ("tokenizer actors", {"CPU": config.cpu_stage_num_cpus}, config.tokenize_concurrency[0]),
        ("decoder actors", {"CPU": config.cpu_stage_num_cpus}, config.decode_concurrency[0]),
    ]  # fmt: skip


def shortfall(nodes: list[dict], demands: list[tuple[str, dict, int]]) -> str | None:
    """Why ``nodes`` (their total resources) cannot start the actors, or None if they can."""
    for what, need, count in demands:
        fits = sum(
            min(math.floor(node.get(k, 0) / v + 1e-9) for k, v in need.items()) for node in nodes
        )
        if fits >= count:
            continue
        wanted = ", ".join(f"{v:g} {k}" for k, v in need.items())
        have = (
            "; ".join(", ".join(f"{node.get(k, 0):g} {k}" for k in need) for node in nodes)
            or "no nodes"
        )
        missing = [k for k, v in need.items() if all(node.get(k, 0) < v for node in nodes)]
        return f"{count} {what} need {wanted} each, and the cluster's nodes have {have}" + (
            f": no node has enough {' or '.join(missing)}" if missing else ""
        )
    return None


def alive_nodes(ray) -> list[dict]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_cluster(ray, config: AnnotateConfig, num_gpus: float) -> None:
    """Return once the cluster can start every actor pool; raise if it cannot (in time)."""
    demands = actor_demands(config, num_gpus)
    reason = shortfall(alive_nodes(ray), demands)
    if reason is None:
        return
    hint = (
        "Lower the request (num_gpus_per_actor=0 device=cpu runs on CPUs), use a cluster "
        "that has the resource, or set resource_wait_s where an autoscaler can add it."
    )
    if config.resource_wait_s <= 0:
        raise ClusterTooSmallError(f"{reason}. {hint}")
    from ray.autoscaler.sdk import request_resources

    global _requested
    request_resources(bundles=[need for _, need, count in demands for _ in range(count)])
    _requested = True
    deadline = time.monotonic() + config.resource_wait_s
    try:
        while (reason := shortfall(alive_nodes(ray), demands)) is not None:
            if time.monotonic() >= deadline:
                raise ClusterTooSmallError(
                    f"{reason}, after waiting {config.resource_wait_s:g} s for the autoscaler. "
                    + hint
                )
            time.sleep(POLL_S)
    except BaseException:  # a timeout or an interrupt: no run follows to use the nodes
        release_resources()
        raise


def release_resources() -> None:
    """Withdraw the autoscaler request :func:`check_cluster` made, if it made one.

    Call it when the run ends, failed or not: otherwise the nodes added for the run
    (GPU nodes, typically) stay requested, and up, after the job, every scheduled run
    included. A no-op when this process has no request standing or Ray is not running.
    """
    global _requested
    if not _requested:  # before importing Ray: a run with nothing left never started it
        return
    import ray
    from ray.autoscaler.sdk import request_resources

    if not ray.is_initialized():
        return
    request_resources(bundles=[])  # an empty request replaces ours: nothing is asked for
    _requested = False

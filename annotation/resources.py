"""Can the cluster ever host the pipeline's actors? Fail now rather than wait for ever.

Ray Data waits, logging "the job may hang forever", when an actor asks for more
than any node has (``num_gpus_per_actor=1`` on a cluster without GPUs). Waiting is
right only where an autoscaler can add such nodes: ``resource_wait_s`` > 0 asks the
autoscaler for them and bounds the wait; 0 (the default) fails at once.
"""

from __future__ import annotations

import math
import time

from annotation.config import AnnotateConfig
from ner.config import ClusterTooSmallError

POLL_S = 5.0


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

    request_resources(bundles=[need for _, need, count in demands for _ in range(count)])
    deadline = time.monotonic() + config.resource_wait_s
    while (reason := shortfall(alive_nodes(ray), demands)) is not None:
        if time.monotonic() >= deadline:
            raise ClusterTooSmallError(
                f"{reason}, after waiting {config.resource_wait_s:g} s for the autoscaler. {hint}"
            )
        time.sleep(POLL_S)

"""Build the Ray Train ``TorchTrainer`` for a TrainConfig, after checking the cluster can host it."""

from __future__ import annotations

import os
import sys

import ray
import ray.train
from ray.train.torch import TorchTrainer

from plumbing.config import ClusterTooSmallError
from plumbing.failpoints import ENV as FAILPOINTS_ENV
from plumbing.failpoints import WAIT_DIR_ENV
from training.config import TrainConfig
from training.console import QUIET_TRAIN_LOG_LEVEL, worker_env
from training.loop import train_func


def check_resources(cfg: TrainConfig) -> None:
    """Fail now, not after an endless wait, when the cluster cannot host the workers."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    need_cpu = cfg.num_workers * cfg.cpus_per_worker
    if need_cpu > cpus:
        raise ClusterTooSmallError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker} CPU need {need_cpu} CPUs; "
            f"the cluster has {cpus:g}. Lower num_workers or cpus_per_worker."
        )
    if cfg.use_gpu and cfg.num_workers > gpus:
        raise ClusterTooSmallError(
            f"{cfg.num_workers} GPU workers need {cfg.num_workers} GPUs; the cluster has {gpus:g}. "
            "Lower num_workers, add GPU nodes, or set use_gpu=false."
        )
    for name, amount in cfg.worker_resources.items():
        if cfg.num_workers * amount > total.get(name, 0):
            raise ClusterTooSmallError(
                f"{cfg.num_workers} workers x {amount:g} {name} need {cfg.num_workers * amount:g}; "
                f"the cluster has {total.get(name, 0):g}. Start nodes with "
                f"--resources='{{\"{name}\": ...}}' or change worker_resources."
            )


def storage_uri(cfg: TrainConfig) -> str:
    """``storage_path`` as Ray Train needs it: a URI, or an absolute local path."""
    return cfg.storage_path if "://" in cfg.storage_path else os.path.abspath(cfg.storage_path)


def local_or_hub(reference: str) -> str:
    """An existing local directory as an absolute path; anything else (hub ids) as given."""
    return os.path.abspath(reference) if os.path.isdir(reference) else reference


# Ray Train's controller learns that the workers have started, reported or finished
# only when it polls them, every 2 s by default: each run paid several polls of
# waiting in its fixed cost. At 0.5 s a 10-step CPU run's "Ray Train and the rest"
# went from 13.0 to 10.4 s, median of three (BENCHMARKS.md, "Training fixed costs"); a poll
# is one small call per worker. The controller reads it from the driver's environment.
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def controller_poll_interval() -> float:
    """Ray Train's poll interval for this run: the user's own setting, else ``POLL_S``."""
    return float(os.environ.setdefault(POLL_ENV, POLL_S))


def build_trainer(cfg: TrainConfig, data: dict[str, dict[str, list]]) -> TorchTrainer:
    """A TorchTrainer running ``train_func`` on ``cfg.num_workers`` workers.

    The data goes through the object store once, not once per worker. The
    workers see the failure tests' ``NER_FAILPOINTS`` (and the marker directory of
    ``wait`` failpoints) when the driver has them.
    """
    check_resources(cfg)
    controller_poll_interval()
    passthrough = {k: os.environ[k] for k in (FAILPOINTS_ENV, WAIT_DIR_ENV) if k in os.environ}
    loop_config = cfg.model_dump() | {
        # Ray Train workers run in their own directory: a relative model path must not
        # reach them as such (the GPU suite's `base_model=.gpu/p2/model` failed there).
        "base_model": local_or_hub(cfg.base_model),
        # Nor a relative storage path: a worker scanning it for checkpoints to resume
        # from would look under its own directory, not where Ray Train wrote them.
        "storage_path": storage_uri(cfg),
        "_data": {split: ray.put(columns) for split, columns in data.items()},
        # rank 0 draws a progress bar only where a person watches a terminal
        "_progress": sys.stderr.isatty(),
    }
    return TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **({"GPU": 1} if cfg.use_gpu else {}),
                **cfg.worker_resources,
            },
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage_uri(cfg),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.num_to_keep,
                checkpoint_score_attribute="devel_f1",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            worker_runtime_env={"env_vars": worker_env(cfg.verbose, passthrough)},
            logging_config=ray.train.LoggingConfig(
                log_level="INFO" if cfg.verbose else QUIET_TRAIN_LOG_LEVEL
            ),
        ),
    )

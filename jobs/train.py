"""Fine-tune a token classifier on CRAFT with Ray Train and export the best model.

    python -m jobs.train --config configs/train_minilm_cpu.yaml [key=value ...]

Also submittable as a Ray job: ``ray job submit --working-dir . -- python -m jobs.train ...``.
Rerunning with the same ``name`` and ``storage_path`` resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ner.config import ConfigError, parse_job_args
from ner.model import ModelNotFoundError, resolve_model
from training.config import TrainConfig


class ClusterTooSmallError(RuntimeError):
    """The run asks for more workers, CPUs or GPUs than the cluster has."""


def check_resources(cfg: TrainConfig) -> None:
    """Fail now, not after an endless wait, when the cluster cannot host the workers."""
    import ray

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


def load_data(cfg: TrainConfig) -> dict[str, dict[str, list]]:
    """Train (original + augmented, or original only) and devel as plain columns."""
    from training.dataset import build_dataset

    build = build_dataset(
        data_dir=cfg.data_dir,
        ontology_dir=cfg.ontology_dir,
        rate=cfg.augment_rate,
        seed=cfg.augment_seed,
        augment_train=cfg.use_augmented,
    )
    columns = {}
    for split, limit in (("train", cfg.max_train_sentences), ("devel", cfg.max_eval_sentences)):
        dataset = build.dataset[split]
        if limit is not None and limit < len(dataset):
            # A seeded sample of train (so original and augmented rows both appear);
            # the first sentences of devel, so every run scores the same subset.
            if split == "train":
                dataset = dataset.shuffle(seed=cfg.seed)
            dataset = dataset.select(range(limit))
        columns[split] = {"tokens": dataset["tokens"], "ner_tags": dataset["ner_tags"]}
    return columns


def run(cfg: TrainConfig):
    """Train, then export the best checkpoint. Returns (result, export directory)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.export import export_checkpoint
    from training.loop import HISTORY_FILE, train_func

    resolve_model(cfg.base_model)  # a missing local model fails before any cluster work
    if not ray.is_initialized():
        ray.init()
    check_resources(cfg)
    data = load_data(cfg)
    storage = cfg.storage_path if "://" in cfg.storage_path else os.path.abspath(cfg.storage_path)
    loop_config = asdict(cfg) | {"_data": {split: ray.put(cols) for split, cols in data.items()}}
    trainer = TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **({"GPU": 1} if cfg.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.num_to_keep,
                checkpoint_score_attribute="devel_f1",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    best_checkpoint, best_metrics = max(
        result.best_checkpoints, key=lambda pair: pair[1]["devel_f1"]
    )
    export_dir = cfg.export_dir or os.path.join(storage, cfg.name, "model")
    with result.checkpoint.as_directory() as latest:  # the latest holds every epoch's history
        history = json.loads(Path(latest, HISTORY_FILE).read_text())
    export_checkpoint(best_checkpoint, best_metrics, history, cfg, export_dir)
    return result, export_dir, best_metrics


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_job_args(TrainConfig, argv, "python -m jobs.train", __doc__)
        result, export_dir, best = run(cfg)
    except (ConfigError, ModelNotFoundError, ClusterTooSmallError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {
        "best_epoch": int(best["epoch"]),
        "devel_f1": round(best["devel_f1"], 4),
        "devel_strict_f1": round(best["devel_strict_f1"], 4),
        "global_step": int(result.metrics["global_step"]),
        "export_dir": export_dir,
    }
    print("training finished: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

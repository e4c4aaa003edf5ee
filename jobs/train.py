"""Fine-tune a token classifier on CRAFT with Ray Train and export the best model.

    python -m jobs.train --config configs/train_minilm_cpu.yaml [key=value ...]

Also submittable as a Ray job: ``ray job submit --working-dir . -- python -m jobs.train ...``.
Rerunning with the same ``name`` and ``storage_path`` resumes from the latest checkpoint.
Prints one line per epoch and a summary; ``verbose=true`` also shows Ray's and
Hugging Face's logs, which are otherwise only in Ray's session log folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from corpora.corpus import InputError
from ner.model import ModelNotFoundError, resolve_model
from plumbing.config import ConfigError, job_main
from training.config import TrainConfig


def run(cfg: TrainConfig):
    """Train, then export the best checkpoint. Returns (result, export directory, best metrics)."""
    from annotation.cluster import init_ray
    from training.checkpoints import HISTORY_FILE
    from training.console import time_line
    from training.dataset import load_data
    from training.export import export_checkpoint
    from training.trainer import build_trainer, storage_uri

    resolve_model(cfg.base_model)  # a missing local model or dataset fails before any
    clock = [time.perf_counter()]  # cluster work
    data = load_data(cfg)
    clock.append(time.perf_counter())
    init_ray(verbose=cfg.verbose, worker_logs=True)  # rank 0 prints the epoch lines
    clock.append(time.perf_counter())
    result = build_trainer(cfg, data).fit()
    clock.append(time.perf_counter())

    # Ties go to the later epoch: the order of Ray Train's list is no rule (after a
    # restart it differs), and a run and its resumed twin must export the same model.
    best_checkpoint, best = max(
        result.best_checkpoints, key=lambda pair: (pair[1]["devel_f1"], pair[1]["epoch"])
    )
    export_dir = cfg.export_dir or os.path.join(storage_uri(cfg), cfg.name, "model")
    with result.checkpoint.as_directory() as latest:  # the latest holds every epoch's history
        history = json.loads(Path(latest, HISTORY_FILE).read_text())
    export_checkpoint(best_checkpoint, best, history, cfg, export_dir)
    clock.append(time.perf_counter())
    print(time_line(clock, history, result.metrics), flush=True)
    return result, export_dir, best


# a bad key or a cluster too small; a missing model or dataset; a foreign dataset
@job_main(TrainConfig, errors=(ConfigError, InputError, ModelNotFoundError, FileNotFoundError))
def main(cfg: TrainConfig) -> int:
    from training.console import summary

    result, export_dir, best = run(cfg)
    print("training finished")
    print(summary(best, int(result.metrics["global_step"]), export_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

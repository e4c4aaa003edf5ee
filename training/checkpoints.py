"""Checkpoints of a training run: what one holds, how it is saved, found and restored.

A checkpoint directory holds a Hugging Face model directory (``model/``), the
optimizer, scheduler, progress and RNG state (``trainer_state.pt``), and the
history of every epoch so far (``history.json``). Rank 0 writes it whole, and Ray
Train uploads it to ``<storage_path>/<name>/checkpoint_*``.

No pickle: the weights are safetensors, and ``trainer_state.pt`` holds only
tensors, numbers, strings, lists, tuples and dicts (numpy's RNG state as a
tensor), so it loads with ``torch.load(..., weights_only=True)``. A checkpoint in
a shared bucket that someone replaced with a pickle carrying code is refused
instead of running that code on every worker that resumes from it.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import ray.train
import torch
from torch.nn.parallel import DistributedDataParallel

MODEL_SUBDIR = "model"  # inside each checkpoint: a Hugging Face model directory
STATE_FILE = "trainer_state.pt"
HISTORY_FILE = "history.json"


def unwrap(model):
    """The model itself, out of its DDP wrapper when there is one."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def save_checkpoint(directory: str, model, tokenizer, optimizer, scheduler, progress: dict) -> None:
    """Write model, tokenizer, optimizer, scheduler, progress and RNG state into ``directory``."""
    model_dir = os.path.join(directory, MODEL_SUBDIR)
    unwrap(model).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": progress,
        "rng": {
            "python": random.getstate(),
            "numpy": _numpy_state(),
            "torch": torch.get_rng_state(),
        },
    }
    torch.save(state, os.path.join(directory, STATE_FILE))
    Path(directory, HISTORY_FILE).write_text(json.dumps(progress["history"], indent=2))


def restore_checkpoint(checkpoint, model, optimizer, scheduler) -> dict:
    """Load model, optimizer, scheduler and RNG state; returns the saved progress.

    Both files are read before anything is applied, so a damaged checkpoint raises
    and leaves the model untouched for the next candidate.
    """
    from safetensors.torch import load_file

    with checkpoint.as_directory() as directory:
        weights = load_file(os.path.join(directory, MODEL_SUBDIR, "model.safetensors"))
        state = torch.load(os.path.join(directory, STATE_FILE), weights_only=True)
    unwrap(model).load_state_dict(weights, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    _set_numpy_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return state["progress"]


def _numpy_state() -> tuple:
    """numpy's global RNG state with its key array as a tensor (``weights_only`` loads it)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss


def _set_numpy_state(state) -> None:
    name, keys, position, has_gauss, gauss = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def stored_checkpoints(storage_path: str, name: str) -> list:
    """This run's checkpoints in storage, the most epochs first.

    Ray Train records a reported checkpoint when its controller next polls the
    workers; a worker that dies in between loses the record though the files are
    in storage (https://github.com/ray-project/ray/issues/41700), and the
    restarted group would start from scratch. Each of our checkpoints is written
    whole by rank 0 and carries its history, so the stored ones can be ranked
    without Ray's record.
    """
    import pyarrow.fs as pafs

    from corpora.corpus import resolve_filesystem

    fs, root = resolve_filesystem(f"{storage_path.rstrip('/')}/{name}")
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(root)):
        if entry.type != pafs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{entry.path}/{HISTORY_FILE}") as stream:
                epochs = len(json.loads(stream.read()))
        except (OSError, ValueError):
            continue  # not (yet) complete
        found.append((epochs, entry.path, ray.train.Checkpoint(entry.path, filesystem=fs)))
    return [c for _, _, c in sorted(found, key=lambda item: item[:2], reverse=True)]


def resume(storage_path: str, name: str, model, optimizer, scheduler) -> dict | None:
    """Progress restored from the newest loadable checkpoint, or None to start fresh."""
    recorded = ray.train.get_checkpoint()
    candidates = stored_checkpoints(storage_path, name)
    candidates += [recorded] if recorded is not None else []
    for checkpoint in candidates:
        try:
            return restore_checkpoint(checkpoint, model, optimizer, scheduler)
        except Exception as err:  # a half-uploaded checkpoint: try the one before
            print(f"checkpoint {checkpoint.path} not loadable ({err}); trying an older one")
    return None

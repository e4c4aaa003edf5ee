"""Checkpoint state without pickle: round trip, and a tampered state file refused."""

import os
import random

import numpy as np
import pytest
import ray.train
import torch
from transformers import get_linear_schedule_with_warmup

from ner.model import load_tokenizer, save_tiny_model, tiny_bert
from training.checkpoints import STATE_FILE, restore_checkpoint, save_checkpoint


def _training_state(seed: int):
    model = tiny_bert(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    loss = model(input_ids=torch.tensor([[101, 2000, 102]]), labels=torch.tensor([[0, 1, 0]])).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


@pytest.fixture
def checkpoint_dir(tmp_path):
    model, optimizer, scheduler = _training_state(0)
    tokenizer = load_tokenizer(save_tiny_model(tmp_path / "base"))
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    save_checkpoint(
        str(tmp_path / "ckpt"), model, tokenizer, optimizer, scheduler, {"epoch": 1, "history": []}
    )
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    return tmp_path / "ckpt", model, optimizer, expected


def test_state_round_trips_and_loads_without_pickle(checkpoint_dir):
    path, saved_model, saved_optimizer, expected = checkpoint_dir
    torch.load(path / STATE_FILE, weights_only=True)  # raises on anything but plain data
    model, optimizer, scheduler = _training_state(1)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    progress = restore_checkpoint(ray.train.Checkpoint(str(path)), model, optimizer, scheduler)
    assert progress["epoch"] == 1
    assert scheduler.last_epoch == 1
    for a, b in zip(model.parameters(), saved_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for group in saved_optimizer.state.values():
        assert any(torch.equal(group["exp_avg"], s["exp_avg"]) for s in optimizer.state.values())
    # The RNGs continue where the saved run's would have.
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_state_file_that_carries_code_is_refused(checkpoint_dir, tmp_path):
    path, *_ = checkpoint_dir
    marker = tmp_path / "code-ran"
    state = torch.load(path / STATE_FILE, weights_only=True)
    state["progress"]["extra"] = _Payload(str(marker))
    torch.save(state, path / STATE_FILE)
    model, optimizer, scheduler = _training_state(1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        restore_checkpoint(ray.train.Checkpoint(str(path)), model, optimizer, scheduler)
    assert not os.path.exists(marker)
    # Nothing was applied: the model is as it was.
    for a, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(a, b)

"""Shared-memory AdamW trains the same model as DDP with clipping and torch's AdamW.

Two real gloo processes each hold a tiny BERT and run three updates of two
accumulated micro-batches each on different data: once under DDP, with
``clip_grad_norm_``, torch's fused AdamW and a linear schedule; once with
``SharedMemoryAdamW``. After every update the parameters must match on every
rank, which also checks that the gradients are zeroed exactly where they must be,
and at the end the optimizer's state must be the one DDP's optimizer holds, so
checkpoints keep their format.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.test_grad_sync import _free_port, gloo_group


def _micro_batches(rank: int, step: int) -> list[dict]:
    """Two padded micro-batches; token ids overlap across ranks and differ by step."""
    batches = []
    for micro in range(2):
        generator = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
        ids = torch.randint(
            1000 + 300 * step, 1400 + 300 * step + 200 * rank, (3, 10), generator=generator
        )
        ids[:, 0] = 101
        ids[1, 7:] = 0
        mask = (ids != 0).long()
        ids[2, 3] = 0  # the padding id, attended: nn.Embedding gives its row no gradient
        labels = torch.randint(0, 13, (3, 10), generator=generator)
        labels[mask == 0] = -100
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


MAX_NORM = 0.5  # small enough that some updates are clipped


def _model_and_optimizer(seed: int):
    from ner.model import tiny_bert
    from training.config import TrainConfig
    from training.loop import _setup_optimizer

    model = tiny_bert(seed=seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg = TrainConfig(base_model="tiny", learning_rate=1e-3, weight_decay=0.01)
    optimizer, scheduler = _setup_optimizer(cfg, model, steps_total=3)
    return model, optimizer, scheduler


def _snapshot(model, norm) -> dict:
    return {"norm": torch.tensor(float(norm))} | {
        n: p.detach().clone() for n, p in model.named_parameters()
    }


def _ddp_run(rank: int) -> tuple[list[dict], dict]:
    from torch.nn.parallel import DistributedDataParallel

    model, optimizer, scheduler = _model_and_optimizer(seed=0)
    ddp = DistributedDataParallel(model)
    steps = []
    for step in range(3):
        first, last = _micro_batches(rank, step)
        with ddp.no_sync():
            ddp(**first).loss.backward()
        ddp(**last).loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append(_snapshot(model, norm))
    return steps, optimizer.state_dict()


def _shared_run(rank: int, world: int) -> tuple[list[dict], dict, list[str]]:
    from training.shm_sync import SHM_DIR, SharedMemoryAdamW

    # A different seed on rank 1: training must start from rank 0's weights, as DDP's does.
    model, optimizer, scheduler = _model_and_optimizer(seed=rank)
    shared = SharedMemoryAdamW(model, optimizer, rank, world)
    left_behind = [p.name for p in Path(SHM_DIR).glob("ner-grads-*")]
    steps = []
    for step in range(3):
        for batch in _micro_batches(rank, step):
            shared.observe(batch["input_ids"])
            model(**batch).loss.backward()
        norm = shared.sync()
        shared.step(MAX_NORM, norm)
        scheduler.step()
        assert all(not p.grad.any() for p in model.parameters()), "a gradient was left"
        steps.append(_snapshot(model, norm))
    return steps, optimizer.state_dict(), left_behind


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        ddp, ddp_state = _ddp_run(rank)
        shared, shared_state, left_behind = _shared_run(rank, world)
        torch.save(
            {
                "ddp": ddp,
                "shared": shared,
                "states": (ddp_state, shared_state),
                "left": left_behind,
            },
            f"{out}/rank{rank}.pt",
        )


def test_shared_memory_adamw_matches_ddp_clipping_and_fused_adamw(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for result in results:
        assert result["left"] == []  # the shared files are unlinked once mapped
        for step, (ddp, shared) in enumerate(zip(result["ddp"], result["shared"], strict=True)):
            assert ddp.keys() == shared.keys()
            for name, value in ddp.items():
                torch.testing.assert_close(
                    shared[name], value, msg=lambda m, n=name, s=step: f"step {s}: {n}: {m}"
                )
        ddp_state, shared_state = result["states"]
        assert shared_state["param_groups"] == ddp_state["param_groups"]
        assert shared_state["state"].keys() == ddp_state["state"].keys()
        for key, state in ddp_state["state"].items():
            for field in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(shared_state["state"][key][field], state[field])
    # Clipping was exercised, and the parameters moved at every update.
    norms = [step["norm"] for step in results[0]["ddp"]]
    assert max(norms) > MAX_NORM, norms
    name = "bert.embeddings.word_embeddings.weight"
    first, second = results[0]["shared"][0][name], results[0]["shared"][1][name]
    assert not torch.equal(first, second)


def test_shared_memory_adamw_refuses_non_float32_parameters():
    import pytest

    from ner.model import tiny_bert
    from training.shm_sync import SharedMemoryAdamW

    model = tiny_bert(seed=0).to(torch.float64)
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="float32 parameters on CPU"):
        SharedMemoryAdamW(model, optimizer, rank=0, world=2)

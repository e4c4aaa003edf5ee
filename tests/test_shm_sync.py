"""Shared-memory gradient averaging gives DDP's gradients, step after step.

Two real gloo processes each hold a tiny BERT and run two optimizer steps of two
accumulated micro-batches each on different data: once under plain DDP, once with
``SharedMemoryGradSync``. After every step the gradients must match on every
parameter, which also checks that ``zero_grad`` clears exactly what it must.
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
        labels = torch.randint(0, 13, (3, 10), generator=generator)
        labels[mask == 0] = -100
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _ddp_grads(rank: int) -> list[dict]:
    from torch.nn.parallel import DistributedDataParallel

    from ner.model import tiny_bert

    model = tiny_bert(seed=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ddp = DistributedDataParallel(model)
    steps = []
    for step in range(2):
        first, last = _micro_batches(rank, step)
        with ddp.no_sync():
            ddp(**first).loss.backward()
        ddp(**last).loss.backward()
        steps.append({n: p.grad.clone() for n, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    return steps


def _shared_grads(rank: int, world: int) -> tuple[list[dict], list[str]]:
    from ner.model import tiny_bert
    from training.shm_sync import SHM_DIR, SharedMemoryGradSync

    # A different seed on rank 1: the sync must start from rank 0's weights, as DDP does.
    model = tiny_bert(seed=rank, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    sync = SharedMemoryGradSync(model, rank, world)
    left_behind = [p.name for p in Path(SHM_DIR).glob("ner-grads-*")]
    steps = []
    for step in range(2):
        for batch in _micro_batches(rank, step):
            sync.observe(batch["input_ids"])
            model(**batch).loss.backward()
        sync.sync()
        steps.append({n: p.grad.clone() for n, p in model.named_parameters()})
        sync.zero_grad()
        assert all(not p.grad.any() for p in model.parameters()), "zero_grad left a gradient"
    return steps, left_behind


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        ddp = _ddp_grads(rank)
        shared, left_behind = _shared_grads(rank, world)
        torch.save({"ddp": ddp, "shared": shared, "left": left_behind}, f"{out}/rank{rank}.pt")


def test_shared_memory_sync_matches_ddp_over_accumulated_steps(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for result in results:
        assert result["left"] == []  # the shared files are unlinked once mapped
        for step, (ddp, shared) in enumerate(zip(result["ddp"], result["shared"], strict=True)):
            assert ddp.keys() == shared.keys()
            for name, grad in ddp.items():
                torch.testing.assert_close(shared[name], grad, msg=f"step {step}: {name}")
    # The two steps used different tokens: a stale embedding row would have shown above.
    name = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(results[0]["shared"][0][name], results[0]["shared"][1][name])


def test_shared_memory_sync_refuses_non_float32_parameters():
    import pytest

    from ner.model import tiny_bert
    from training.shm_sync import SharedMemoryGradSync

    model = tiny_bert(seed=0).to(torch.float64)
    with pytest.raises(ValueError, match="float32 parameters on CPU"):
        SharedMemoryGradSync(model, rank=0, world_size=2)

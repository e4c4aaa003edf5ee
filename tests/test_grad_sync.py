"""The row-wise embedding sync gives the same gradients as DDP's dense all-reduce.

Two real gloo processes train one step of a tiny BERT on different batches, once
with plain DDP and once with the embedding excluded from DDP and synced by rows.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int) -> dict:
    # Disjoint and shared token ids across ranks, and some padding (id 0).
    generator = torch.Generator().manual_seed(rank)
    ids = torch.randint(1000, 1100 + 500 * rank, (3, 12), generator=generator)
    ids[:, 0] = 101
    ids[2, 8:] = 0
    mask = (ids != 0).long()
    labels = torch.randint(0, 13, (3, 12), generator=generator)
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(rank: int, world: int, row_sync: bool) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from ner.model import tiny_bert
    from training.grad_sync import EmbeddingRowSync

    torch.manual_seed(0)
    model = tiny_bert(seed=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    sync = EmbeddingRowSync(model, world)
    if row_sync:
        sync.exclude_from_ddp(model)
    ddp = DistributedDataParallel(model)
    batch = _batch(rank)
    sync.observe(batch["input_ids"])
    ddp(**batch).loss.backward()
    if row_sync:
        sync.sync()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@contextmanager
def gloo_group(rank: int, world: int, port: int):
    """This spawned process as one single-threaded rank of a gloo group on loopback."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        dense = _grads(rank, world, row_sync=False)
        rows = _grads(rank, world, row_sync=True)
        torch.save({"dense": dense, "rows": rows}, f"{out}/rank{rank}.pt")


def test_row_sync_matches_dense_ddp_on_every_parameter(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    name = "bert.embeddings.word_embeddings.weight"
    for result in results:
        assert result["dense"].keys() == result["rows"].keys()
        for key, dense in result["dense"].items():
            torch.testing.assert_close(result["rows"][key], dense, msg=key)
    # Both ranks hold the same averaged gradient, and it is non-zero only on the
    # rows some rank used: the sync really exchanged rows between workers.
    torch.testing.assert_close(results[0]["rows"][name], results[1]["rows"][name])
    touched = results[0]["rows"][name].abs().sum(dim=1).nonzero().squeeze(1)
    used = torch.cat([_batch(r)["input_ids"].reshape(-1) for r in range(world)]).unique()
    assert set(touched.tolist()) <= set(used.tolist())
    only_rank1 = set(_batch(1)["input_ids"].reshape(-1).tolist()) - set(
        _batch(0)["input_ids"].reshape(-1).tolist()
    )
    assert only_rank1 & set(touched.tolist()), "rank 0 should hold rows only rank 1 used"


def test_tied_embeddings_stay_with_ddp():
    from transformers import BertConfig, BertForMaskedLM

    from training.grad_sync import EmbeddingRowSync

    model = BertForMaskedLM(
        BertConfig(
            vocab_size=200,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            tie_word_embeddings=True,
        )
    )
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert not EmbeddingRowSync(model, world_size=2).enabled

"""The training loop each Ray Train worker runs: setup helpers, then a visible loop.

``train_func`` is handed to ``TorchTrainer``. It sets up data, model, optimizer
and precision, restores from the newest checkpoint when the run is resumed (a
worker failure, or the job rerun under the same name), and then for each epoch
trains, evaluates the whole devel set once across all workers, and reports the
metrics with a checkpoint. PyTorch DDP, as ``ray.train.torch.prepare_model``
sets it up, averages the gradients when there is more than one worker.
"""

from __future__ import annotations

import random
import tempfile
import time
from contextlib import nullcontext

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ner.labels import ID2LABEL
from ner.model import load_base_for_training, load_tokenizer, pad_token_id
from plumbing.failpoints import failpoint
from training.batching import IGNORE_INDEX, collate, deal, encode_sentences, global_batches
from training.checkpoints import resume, save_checkpoint, unwrap
from training.config import TrainConfig
from training.console import epoch_line, quiet_worker_logs
from training.evaluate import predict
from training.metrics import evaluation_metrics

WARM_UP_STEPS = 10  # steps before the steady-state clock starts (kernels, allocator, caches)
HISTORY_KEYS = (
    "epoch",
    "global_step",
    "train_loss",
    "devel_loss",
    "devel_f1",
    "devel_strict_f1",
    "devel_token_accuracy",
    "epoch_seconds",
    "steady_step_ms",
    "setup_s",
    "train_s",
    "eval_s",
)

# --- setup helpers ---------------------------------------------------------


def _setup_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _setup_data(cfg: TrainConfig, data: dict, tokenizer):
    """Encode the train and devel splits handed over through the object store."""
    train = ray.get(data["train"]) if isinstance(data["train"], ray.ObjectRef) else data["train"]
    devel = ray.get(data["devel"]) if isinstance(data["devel"], ray.ObjectRef) else data["devel"]
    encode = lambda split: encode_sentences(  # noqa: E731
        tokenizer, split["tokens"], split["ner_tags"], cfg.max_length, cfg.label_all_subtokens
    )
    return encode(train), encode(devel), devel["ner_tags"]


def _setup_optimizer(cfg: TrainConfig, model, steps_total: int):
    """AdamW (0.9, 0.999, 1e-8) without decay on biases and LayerNorm, linear schedule."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=True,  # one kernel for all parameters instead of a loop over tensors
    )
    warmup = int(cfg.warmup_ratio * steps_total)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps_total)
    return optimizer, scheduler


def _setup_precision(cfg: TrainConfig, device: torch.device):
    """Autocast context and grad scaler: bf16 where supported, else fp16, only on GPU."""
    mode = cfg.mixed_precision
    if device.type != "cuda" or mode == "no":
        return nullcontext, None
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _progress_bar(total: int, epoch: int, epochs: int, show: bool):
    """Rank 0's bar of training steps, drawn by the driver (``tqdm_ray``), or None."""
    if not show:
        return None
    from ray.experimental.tqdm_ray import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step")


# --- train and evaluate --------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(model, optimizer, scheduler, scaler, autocast, steps, examples, ctx) -> tuple:
    """One pass over this epoch's global batches.

    Returns (summed loss, labelled tokens, seconds per step after warm-up or None).
    ``steps`` are global batches; this worker trains on its deal of each. The loss
    is summed on the device and read once per epoch, not per step; the steady-state
    clock syncs with the device twice an epoch, at ``WARM_UP_STEPS`` and at the end.
    """
    cfg, rank, world, device = ctx["cfg"], ctx["rank"], ctx["world"], ctx["device"]
    labelled, bar = ctx["labelled"], ctx["bar"]
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # loss, labelled tokens
    warm_up = min(WARM_UP_STEPS, len(steps) // 2)
    warm_started = None
    for step, global_batch in enumerate(steps):
        if step == warm_up:
            _synchronize(device)
            warm_started = time.perf_counter()
        first = step - step % cfg.grad_accum_steps
        update = steps[first : first + cfg.grad_accum_steps]
        last_of_update = step == first + len(update) - 1
        # Every worker knows the whole update, so each scales its summed token loss by
        # world / (labelled tokens of the update): DDP's average over the workers is
        # then the mean over every token of the global batch, exactly what one worker
        # holding the whole batch computes.
        update_tokens = sum(labelled[i] for batch in update for i in batch)
        indices = deal(global_batch, rank, world)
        batch = collate([examples[i] for i in indices], ctx["pad_id"])
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        ddp = isinstance(model, DistributedDataParallel)
        with model.no_sync() if ddp and not last_of_update else nullcontext():
            with autocast():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(
                out.logits.float().flatten(0, 1),
                batch["labels"].flatten(),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            scaled = loss * (world / max(update_tokens, 1))
            (scaler.scale(scaled) if scaler else scaled).backward()
        loss_sum[0] += loss.detach()
        loss_sum[1] += sum(labelled[i] for i in indices)
        if not last_of_update:
            continue
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        ctx["progress"]["global_step"] += 1
        if bar is not None:
            bar.update(1)
        failpoint("train.after_step")
    _synchronize(device)
    steady = None
    if warm_started is not None and len(steps) > warm_up:
        steady = (time.perf_counter() - warm_started) / (len(steps) - warm_up)
    if world > 1:
        dist.all_reduce(loss_sum)
    return float(loss_sum[0]), float(loss_sum[1]), steady


def evaluate(model, examples, gold_tag_ids, cfg: TrainConfig, device, autocast, rank, world):
    """Score the whole devel set once: each worker predicts a disjoint slice, all gather."""
    model.eval()
    mine = list(range(rank, len(examples), world))
    predictions, loss_sum = predict(
        model,
        examples,
        mine,
        cfg.eval_batch_size,
        pad_token_id(unwrap(model)),
        device,
        autocast,
        decoding=cfg.decoding,
    )
    gathered = [predictions]
    if world > 1 and dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, predictions)
        dist.all_reduce(loss_sum)
    merged: dict[int, list[int]] = {}
    for part in gathered:
        overlap = merged.keys() & part.keys()
        if overlap:
            raise RuntimeError(f"devel sentences {sorted(overlap)[:5]} were scored twice")
        merged.update(part)
    if len(merged) != len(examples):
        raise RuntimeError(f"scored {len(merged)} of {len(examples)} devel sentences")
    gold = [[ID2LABEL[t] for t in tags] for tags in gold_tag_ids]
    pred = [[ID2LABEL[t] for t in merged[i]] for i in range(len(examples))]
    metrics = evaluation_metrics(gold, pred, prefix="devel")
    loss_sum = loss_sum.cpu()
    metrics["devel_loss"] = float(loss_sum[0] / max(loss_sum[1], 1))
    model.train()
    return metrics


# --- the loop ------------------------------------------------------------------


def train_func(config: dict) -> None:
    """Run on every Ray Train worker. ``config`` is a TrainConfig as a dict plus ``_data``."""
    setup_started = time.perf_counter()
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.model_fields})
    if not cfg.verbose:
        quiet_worker_logs()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(cfg.torch_threads or cfg.cpus_per_worker)
    _setup_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.base_model)
    train_examples, devel_examples, devel_gold = _setup_data(cfg, config["_data"], tokenizer)
    lengths = [len(e) for e in train_examples]
    steps_per_epoch = len(global_batches(lengths, cfg.batch_size, world, cfg.seed, 0))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    updates_per_epoch = -(-steps_per_epoch // cfg.grad_accum_steps)

    model = load_base_for_training(cfg.base_model)
    optimizer, scheduler = _setup_optimizer(cfg, model, updates_per_epoch * cfg.epochs)
    restored = resume(cfg.storage_path, cfg.name, model, optimizer, scheduler)
    resumed = restored is not None
    progress = restored or {"epoch": -1, "global_step": 0, "history": []}
    # BERT's buffers are constant position and token-type ids: nothing to broadcast
    # each step. Gradients as views into DDP's buckets save a copy per step.
    model = ray.train.torch.prepare_model(
        model,
        parallel_strategy_kwargs={"broadcast_buffers": False, "gradient_as_bucket_view": True},
    )
    device = ray.train.torch.get_device()
    autocast, scaler = _setup_precision(cfg, device)
    ctx = {
        "cfg": cfg,
        "rank": rank,
        "world": world,
        "device": device,
        "pad_id": pad_token_id(unwrap(model)),
        "labelled": [sum(label != IGNORE_INDEX for label in e.labels) for e in train_examples],
        "progress": progress,
    }

    # Fixed costs, reported with each epoch's metrics so a run shows where they go:
    # tokenizer, data encoding, model load, the move to the device and DDP's wrap.
    setup_s = time.perf_counter() - setup_started
    for epoch in range(progress["epoch"] + 1, cfg.epochs):
        # Dropout noise depends only on (seed, epoch, rank), so a resumed epoch
        # replays exactly as it would have run.
        torch.manual_seed(cfg.seed + 1000 * epoch + rank)
        model.train()
        started = time.perf_counter()
        steps = global_batches(
            lengths, cfg.batch_size, world, cfg.seed, epoch, cfg.group_by_length
        )[:steps_per_epoch]
        ctx["bar"] = _progress_bar(
            -(-len(steps) // cfg.grad_accum_steps),
            epoch,
            cfg.epochs,
            config.get("_progress", False) and rank == 0,
        )
        loss, tokens, steady = train_epoch(
            model, optimizer, scheduler, scaler, autocast, steps, train_examples, ctx
        )
        if ctx["bar"] is not None:
            ctx["bar"].close()
        progress["epoch"] = epoch

        trained = time.perf_counter()
        metrics = evaluate(model, devel_examples, devel_gold, cfg, device, autocast, rank, world)
        metrics.update(
            setup_s=setup_s,
            train_s=trained - started,
            eval_s=time.perf_counter() - trained,
            epoch=epoch + 1,
            global_step=progress["global_step"],
            train_loss=loss / max(tokens, 1),
            learning_rate=scheduler.get_last_lr()[0],
            epoch_seconds=time.perf_counter() - started,
            # For benchmarks: a step's cost once warm, without start-up or evaluation.
            steady_step_ms=None if steady is None else 1000 * steady,
            resumed=int(resumed),
        )
        progress["history"].append({k: metrics[k] for k in HISTORY_KEYS})
        if rank == 0:
            print(epoch_line(metrics, cfg.epochs), flush=True)
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            saving = time.perf_counter()
            if rank == 0:
                save_checkpoint(directory, model, tokenizer, optimizer, scheduler, progress)
                saved = ray.train.Checkpoint.from_directory(directory)
            metrics["checkpoint_s"] = time.perf_counter() - saving
            ray.train.report(metrics, checkpoint=saved)
        # A restarted group resumes from the checkpoint just reported; a fresh one
        # (not resumed) is the one the failure tests interrupt.
        if not resumed:
            failpoint("train.after_epoch")

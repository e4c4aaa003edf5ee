"""Peer baseline: the same model, data and hyperparameters trained in one process by
Hugging Face ``Trainer`` (what a hand-written script would do), scored the same way.

    python -m benchmarks.hf_trainer_baseline --config configs/train_minilm_cpu.yaml [key=value ...]

Prints one JSON line: ``hf_trainer_result: {...}``. Run it through
``benchmarks.train_vs_hf_trainer`` to compare it with the Ray Train job.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch

from ner.labels import ID2LABEL
from ner.model import load_base_for_training, load_tokenizer
from plumbing.config import load_config
from training.batching import IGNORE_INDEX, encode_sentences
from training.config import TrainConfig
from training.dataset import load_data
from training.loop import WARM_UP_STEPS
from training.metrics import evaluation_metrics


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


def steady_step_clock(warm_up_steps: int):
    """A Trainer callback timing optimizer steps once warm, over the first epoch.

    The same measure as our loop's ``steady_step_ms``: the clock starts after the
    warm-up steps (with a device sync) and stops at the end of the first epoch,
    before its evaluation (or at the end of training, if that comes first).
    """
    from transformers import TrainerCallback

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class SteadyStepClock(TrainerCallback):
        ms: float | None = None
        started: float | None = None
        first_step = 0

        def on_step_begin(self, args, state, control, **kwargs):
            per_epoch = max(state.max_steps // max(int(args.num_train_epochs), 1), 1)
            if self.started is None and state.global_step >= min(warm_up_steps, per_epoch // 2):
                sync()
                self.started, self.first_step = time.perf_counter(), state.global_step

        def _stop(self, state) -> None:
            if self.ms is None and self.started is not None and state.global_step > self.first_step:
                sync()
                self.ms = 1000 * (time.perf_counter() - self.started)
                self.ms /= state.global_step - self.first_step

        def on_epoch_end(self, args, state, control, **kwargs):
            self._stop(state)

        def on_train_end(self, args, state, control, **kwargs):
            self._stop(state)

    return SteadyStepClock()


def main(argv: list[str] | None = None) -> int:
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    parser = argparse.ArgumentParser(prog="python -m benchmarks.hf_trainer_baseline")
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(TrainConfig, args.config, args.overrides)
    started = time.perf_counter()
    # Same CPU budget as the Ray job: all of its workers' CPUs, as intra-op threads.
    if not cfg.use_gpu:
        torch.set_num_threads(cfg.num_workers * cfg.cpus_per_worker)
    data = load_data(cfg)
    tokenizer = load_tokenizer(cfg.base_model)
    encode = lambda split: encode_sentences(  # noqa: E731
        tokenizer,
        data[split]["tokens"],
        data[split]["ner_tags"],
        cfg.max_length,
        cfg.label_all_subtokens,
    )
    train, devel = encode("train"), encode("devel")
    gold = [[ID2LABEL[t] for t in tags] for tags in data["devel"]["ner_tags"]]

    def compute_metrics(prediction):
        # Trainer orders eval batches by length too (a seeded LengthGroupedSampler):
        # rebuild that order to pair each prediction row with its sentence.
        order = list(iter(trainer._get_eval_sampler(trainer.eval_dataset)))
        best = np.asarray(prediction.predictions).argmax(-1)
        labels = np.asarray(prediction.label_ids)
        for row, i in enumerate(order):  # the pairing must reproduce the gold labels
            first = [p for p in devel[i].first_subtoken if p >= 0]
            if [ID2LABEL[int(t)] for t in labels[row, first]] != gold[i][: len(first)]:
                raise RuntimeError(f"eval row {row} is not devel sentence {i}")
        pred: list = [None] * len(devel)
        for row, i in enumerate(order):
            pred[i] = [
                ID2LABEL[int(best[row, p])] if p >= 0 else "O" for p in devel[i].first_subtoken
            ]
        return evaluation_metrics(gold, pred, prefix="f")  # Trainer adds "eval_"

    torch.manual_seed(cfg.seed)
    model = load_base_for_training(cfg.base_model)
    world = 1 if not cfg.use_gpu else max(torch.cuda.device_count(), 1)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            learning_rate=cfg.learning_rate,
            # the Ray job's global batch: batch_size per worker x workers
            per_device_train_batch_size=cfg.batch_size * cfg.num_workers // world,
            per_device_eval_batch_size=cfg.eval_batch_size,
            gradient_accumulation_steps=cfg.grad_accum_steps,
            num_train_epochs=cfg.epochs,
            lr_scheduler_type="linear",
            warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            optim="adamw_torch_fused",
            seed=cfg.seed,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            use_cpu=not cfg.use_gpu,
            bf16=cfg.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            disable_tqdm=True,
            max_steps=(cfg.max_steps_per_epoch * cfg.epochs // cfg.grad_accum_steps)
            if cfg.max_steps_per_epoch
            else -1,
        )
        clock = steady_step_clock(WARM_UP_STEPS)
        trainer = Trainer(
            callbacks=[clock],
            model=model,
            args=training_args,
            train_dataset=_Encoded(train),
            eval_dataset=_Encoded(devel),
            data_collator=DataCollatorForTokenClassification(
                tokenizer, label_pad_token_id=IGNORE_INDEX
            ),
            compute_metrics=compute_metrics,
        )
        trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_f_f1" in h]
    best = max(evals, key=lambda h: h["eval_f_f1"])
    result = {
        "devel_f1": best["eval_f_f1"],
        "devel_strict_f1": best["eval_f_strict_f1"],
        "best_epoch": round(best["epoch"]),
        "epochs_f1": [round(h["eval_f_f1"], 4) for h in evals],
        "global_step": trainer.state.global_step,
        # Trainer's own figure: the training loop with its per-epoch evaluations
        "train_seconds": next(
            h["train_runtime"] for h in trainer.state.log_history if "train_runtime" in h
        ),
        "steady_step_ms": clock.ms,
        "seconds": time.perf_counter() - started,
    }
    print("hf_trainer_result: " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

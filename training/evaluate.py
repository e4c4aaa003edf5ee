"""Score any token-classification model directory (ours or published) on a CRAFT split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ner.labels import ENTITY_TYPES
from ner.model import LoadedClassifier
from training.batching import collate, encode_sentences, word_predictions
from training.metrics import evaluation_metrics


@torch.no_grad()
def predict_tags(
    loaded: LoadedClassifier,
    sentences: Sequence[Sequence[str]],
    batch_size: int = 64,
    max_length: int = 512,
) -> list[list[str]]:
    """Word-level tags (first sub-token's argmax) for pre-tokenised sentences."""
    model = loaded.model
    encoded = encode_sentences(
        loaded.tokenizer, sentences, [[0] * len(s) for s in sentences], max_length
    )
    pad_id = model.config.pad_token_id or 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    predictions: dict[int, list[str]] = {}
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        examples = [encoded[i] for i in indices]
        batch = collate(examples, pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for i, ids in zip(indices, word_predictions(logits, examples), strict=True):
            predictions[i] = [loaded.id2label[t] for t in ids]
    return [predictions[i] for i in range(len(encoded))]


def score(
    loaded: LoadedClassifier,
    sentences: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    split: str = "devel",
    batch_size: int = 64,
) -> dict[str, float]:
    return evaluation_metrics(gold, predict_tags(loaded, sentences, batch_size), prefix=split)


def plot_per_type_f1(
    metrics: dict[str, float], path: str | os.PathLike, split: str = "devel", title: str = ""
) -> Path:
    """A bar chart of per-type F1 (default and strict modes) as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on batch machines
    import matplotlib.pyplot as plt

    kinds = [*ENTITY_TYPES, "all"]
    default = [metrics[f"{split}_{k}_f1"] for k in ENTITY_TYPES] + [metrics[f"{split}_f1"]]
    strict = [metrics[f"{split}_strict_{k}_f1"] for k in ENTITY_TYPES] + [
        metrics[f"{split}_strict_f1"]
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], default, width=0.4, label="F1")
    ax.bar([x + 0.2 for x in xs], strict, width=0.4, label="strict IOB2 F1")
    for x, value in zip(xs, default, strict=True):
        ax.text(x - 0.2, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs), kinds)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("entity F1")
    ax.set_title(title or f"per-type F1 on {split}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

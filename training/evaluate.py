"""Score any token-classification model directory (ours or published) on a CRAFT split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from ner.labels import ENTITY_TYPES, ID2LABEL, LABEL2ID
from ner.model import LoadedClassifier, pad_token_id
from training.batching import (
    IGNORE_INDEX,
    Encoded,
    collate,
    encode_sentences,
    word_predictions,
)
from training.metrics import evaluation_metrics


@torch.no_grad()
def predict(
    model,
    examples: Sequence[Encoded],
    indices: Sequence[int],
    batch_size: int,
    pad_id: int,
    device: torch.device | str = "cpu",
    autocast=nullcontext,
    decoding: str = "viterbi",
    canonical: Sequence[int] | None = None,
) -> tuple[dict[int, list[int]], torch.Tensor]:
    """Word-level canonical label ids of ``examples[i]`` for each index.

    Decoded as :func:`training.batching.word_predictions` says (``decoding``,
    ``canonical``).

    Batches sentences of similar length together to cut padding. Also returns the
    summed token loss and the number of labelled tokens, on ``device``, as one
    tensor (meaningful where the examples carry labels).
    """
    order = sorted(indices, key=lambda i: len(examples[i]))
    predictions: dict[int, list[int]] = {}
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch_examples = [examples[i] for i in chunk]
        batch = {k: v.to(device) for k, v in collate(batch_examples, pad_id).items()}
        with autocast():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits.float()
        loss_sum[0] += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1),
            batch["labels"].flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        loss_sum[1] += (batch["labels"] != IGNORE_INDEX).sum()
        words = word_predictions(logits.cpu(), batch_examples, decoding, canonical)
        predictions.update(zip(chunk, words, strict=True))
    return predictions, loss_sum


def predict_tags(
    loaded: LoadedClassifier,
    sentences: Sequence[Sequence[str]],
    batch_size: int = 64,
    max_length: int = 512,
    decoding: str = "viterbi",
) -> list[list[str]]:
    """Word-level tags for pre-tokenised sentences, decoded as ``decoding`` says."""
    encoded = encode_sentences(
        loaded.tokenizer, sentences, [[0] * len(s) for s in sentences], max_length
    )
    canonical = [LABEL2ID[loaded.id2label[i]] for i in range(len(loaded.id2label))]
    ids, _ = predict(
        loaded.model,
        encoded,
        range(len(encoded)),
        batch_size,
        pad_token_id(loaded.model),
        decoding=decoding,
        canonical=canonical,
    )
    return [[ID2LABEL[t] for t in ids[i]] for i in range(len(encoded))]


def score(
    loaded: LoadedClassifier,
    sentences: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    split: str = "devel",
    batch_size: int = 64,
    decoding: str = "viterbi",
) -> dict[str, float]:
    tags = predict_tags(loaded, sentences, batch_size, decoding=decoding)
    return evaluation_metrics(gold, tags, prefix=split)


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

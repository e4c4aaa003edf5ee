"""Sub-token encoding with aligned labels, length-grouped sharded batches, padding.

Kept apart from the loop so each piece can be tested on its own and reused by the
Hugging Face ``Trainer`` baseline (which must see the same encoded examples).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ner.labels import ID2LABEL, LABEL2ID
from ner.viterbi import DECODINGS, N_LABELS, bio_viterbi

IGNORE_INDEX = -100  # the index torch's cross-entropy skips
# Word-level continuation label for sub-tokens after the first, when every
# sub-token is trained (B-X continues as I-X).
_CONTINUATION = {
    i: LABEL2ID["I-" + label[2:]] if label.startswith("B-") else i for i, label in ID2LABEL.items()
}


@dataclass
class Encoded:
    """One sentence as model input: sub-token ids, aligned labels, word -> first sub-token."""

    input_ids: list[int]
    labels: list[int]
    first_subtoken: list[int]  # per word; -1 when the word produced no sub-token

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_sentences(
    tokenizer,
    tokens: Sequence[Sequence[str]],
    tag_ids: Sequence[Sequence[int]],
    max_length: int = 512,
    label_all_subtokens: bool = False,
) -> list[Encoded]:
    """Tokenise pre-split sentences and align word tags to sub-tokens.

    The first sub-token of a word carries its tag; the rest are ignored, or, with
    ``label_all_subtokens``, carry the word's tag with B- turned into I-.
    """
    batch = tokenizer(
        [list(t) for t in tokens],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    encoded = []
    for i, tags in enumerate(tag_ids):
        word_ids = batch.word_ids(i)
        labels = []
        first = [-1] * len(tags)
        previous = None
        for position, word in enumerate(word_ids):
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous:
                first[word] = position
                labels.append(int(tags[word]))
            else:
                labels.append(
                    _CONTINUATION[int(tags[word])] if label_all_subtokens else IGNORE_INDEX
                )
            previous = word
        encoded.append(Encoded(list(batch["input_ids"][i]), labels, first))
    return encoded


def global_batches(
    lengths: Sequence[int],
    batch_size: int,
    world_size: int = 1,
    seed: int = 42,
    epoch: int = 0,
    group_by_length: bool = True,
    shuffle: bool = True,
) -> list[list[int]]:
    """One epoch's global batches of example indices, in step order.

    Examples are shuffled with ``seed + epoch`` and cut into global batches of
    ``batch_size * world_size``, grouped by length within windows of 50 global
    batches to cut padding (as Hugging Face's ``LengthGroupedSampler``). Every
    example lands in exactly one global batch. The batches depend on the world
    size only through their size: ``world_size`` workers with ``batch_size`` each
    see the same global batches as one worker with ``batch_size * world_size``
    (unless a tail shorter than ``world_size`` is folded into the batch before it).
    """
    n = len(lengths)
    if n < world_size:
        raise ValueError(f"{n} examples cannot be shared among {world_size} workers")
    order = list(range(n))
    rng = random.Random(seed + epoch)
    if shuffle:
        rng.shuffle(order)
    step_size = batch_size * world_size
    if group_by_length:
        window = step_size * 50
        order = [
            i
            for start in range(0, n, window)
            for i in sorted(order[start : start + window], key=lambda j: -lengths[j])
        ]
    steps = [order[start : start + step_size] for start in range(0, n, step_size)]
    if len(steps) > 1 and len(steps[-1]) < world_size:
        # Too few left over to give every worker one: fold them into the step before,
        # so no example is dropped or repeated and step counts stay equal.
        steps[-2].extend(steps.pop())
    if shuffle:
        rng.shuffle(steps)
    return steps


def shard_batches(
    lengths: Sequence[int],
    batch_size: int,
    world_size: int = 1,
    rank: int = 0,
    seed: int = 42,
    epoch: int = 0,
    shuffle: bool = True,
    group_by_length: bool = True,
) -> list[list[int]]:
    """This worker's batches of example indices for one epoch: its deal of each global batch.

    Every example lands in exactly one batch of exactly one worker, and every
    worker gets the same number of batches (distributed data parallel steps in
    lock-step). Each global batch (:func:`global_batches`) is dealt out across the
    workers, so at every step all workers hold sentences of about the same length:
    a step waits for its slowest worker, and two unrelated batches of a shuffled
    epoch can differ several-fold in length.
    """
    steps = global_batches(lengths, batch_size, world_size, seed, epoch, group_by_length, shuffle)
    return [deal(step, rank, world_size) for step in steps]


def deal(global_batch: list[int], rank: int, world_size: int) -> list[int]:
    """This worker's share of one global batch (length-sorted, so shares are alike)."""
    return global_batch[rank::world_size]


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example (dynamic padding)."""
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example)
        input_ids[row, :size] = torch.tensor(example.input_ids)
        labels[row, :size] = torch.tensor(example.labels)
        attention[row, :size] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def word_predictions(
    logits: torch.Tensor,
    examples: Sequence[Encoded],
    decoding: str = "viterbi",
    canonical: Sequence[int] | None = None,
) -> list[list[int]]:
    """Per-word canonical label ids from each word's first sub-token; ``O`` for words with none.

    ``decoding="argmax"`` takes each word's best label; ``"viterbi"`` the most
    probable valid BIO sequence per sentence (:mod:`ner.viterbi`), as the
    annotation job decodes. ``canonical[i]`` is the canonical id of the model's
    label ``i`` (None: the model's ids are canonical, as ours are).
    """
    logp = torch.log_softmax(logits.float(), dim=-1).numpy()
    if canonical is not None:
        full = np.full((*logp.shape[:2], N_LABELS), -np.inf, dtype=np.float32)
        full[..., np.asarray(canonical)] = logp
        logp = full
    counts = np.array([len(e.first_subtoken) for e in examples], dtype=np.int64)
    rows = np.repeat(np.arange(len(examples)), counts)
    first = np.fromiter(
        (p for e in examples for p in e.first_subtoken), dtype=np.int64, count=int(counts.sum())
    )
    words = logp[rows, np.maximum(first, 0)]
    words[first < 0] = -np.inf
    words[first < 0, LABEL2ID["O"]] = 0.0
    labels = words.argmax(axis=1)
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    if decoding == "viterbi" and len(labels):
        starts = np.zeros(len(labels), dtype=bool)
        starts[(np.cumsum(counts) - counts)[counts > 0]] = True
        labels = bio_viterbi(words, starts)
    return [part.tolist() for part in np.split(labels, np.cumsum(counts)[:-1])]

from collections import Counter

import pytest
import torch

from ner.labels import LABEL2ID
from ner.model import load_tokenizer
from training.batching import (
    IGNORE_INDEX,
    collate,
    encode_sentences,
    shard_batches,
    word_predictions,
)


@pytest.mark.parametrize(
    "n, batch, world", [(101, 8, 2), (17, 4, 3), (5, 8, 2), (64, 8, 1), (9, 4, 4)]
)
def test_every_example_once_per_epoch_with_equal_steps(n, batch, world):
    lengths = [(i * 37) % 50 + 1 for i in range(n)]
    shards = [shard_batches(lengths, batch, world, rank, seed=1, epoch=3) for rank in range(world)]
    seen = Counter(i for shard in shards for b in shard for i in b)
    assert seen == Counter(range(n))
    assert len({len(shard) for shard in shards}) == 1  # lock-step for DDP


def test_batches_are_deterministic_per_epoch_and_grouped_by_length():
    lengths = [(i * 37) % 50 + 1 for i in range(400)]
    a = shard_batches(lengths, 8, 2, 0, seed=42, epoch=0)
    assert a == shard_batches(lengths, 8, 2, 0, seed=42, epoch=0)
    assert a != shard_batches(lengths, 8, 2, 0, seed=42, epoch=1)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    random_spread = sum(
        max(lengths[i] for i in b) - min(lengths[i] for i in b)
        for b in shard_batches(lengths, 8, 2, 0, seed=42, epoch=0, group_by_length=False)
    ) / len(a)
    assert spread < random_spread / 3


def test_workers_get_batches_of_similar_length_at_every_step():
    # A step waits for its slowest worker: the batches a step deals out to the
    # workers come from one length-sorted global batch.
    lengths = [(i * 37) % 97 + 3 for i in range(1600)]
    shards = [shard_batches(lengths, 4, 2, rank, seed=42, epoch=0) for rank in range(2)]
    widths = [[max(lengths[i] for i in b) for b in shard] for shard in shards]
    gaps = [abs(a - b) for a, b in zip(*widths, strict=True)]
    assert sum(gaps) / len(gaps) < 3  # random pairs of batches would differ by ~30


def test_too_few_examples_for_the_workers():
    with pytest.raises(ValueError, match="cannot be shared"):
        shard_batches([3], 8, world_size=2)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("embedded")


def test_first_subtoken_carries_the_tag(tokenizer):
    tokens = [["Mouse", "retinal", "photoreceptors"]]
    tags = [[LABEL2ID["B-Taxon"], LABEL2ID["O"], LABEL2ID["B-Cell"]]]
    (enc,) = encode_sentences(tokenizer, tokens, tags)
    pieces = tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert len(pieces) > 5  # 'photoreceptors' splits into several pieces
    labelled = [
        (p, label) for p, label in zip(pieces, enc.labels, strict=True) if label != IGNORE_INDEX
    ]
    assert [label for _, label in labelled] == tags[0]
    assert [pieces[i] for i in enc.first_subtoken] == [p for p, _ in labelled]
    (every,) = encode_sentences(tokenizer, tokens, tags, label_all_subtokens=True)
    inside = [label for label in every.labels[enc.first_subtoken[2] + 1 : -1]]
    assert inside and set(inside) == {LABEL2ID["I-Cell"]}


def test_truncated_words_still_get_a_prediction(tokenizer):
    words = ["word"] * 40
    (enc,) = encode_sentences(tokenizer, [words], [[0] * 40], max_length=16)
    assert len(enc) == 16 and enc.first_subtoken.count(-1) == 40 - 14
    logits = torch.zeros(1, 16, 13)
    logits[0, :, LABEL2ID["B-Gene"]] = 1.0
    (pred,) = word_predictions(logits, [enc])
    assert len(pred) == 40 and pred.count(LABEL2ID["O"]) == 26


def test_collate_pads_dynamically(tokenizer):
    enc = encode_sentences(tokenizer, [["a"], ["a", "b", "c"]], [[0], [0, 0, 0]])
    batch = collate(enc, pad_id=0)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].sum().item() == 3 + 5
    assert (batch["labels"][0, 3:] == IGNORE_INDEX).all()

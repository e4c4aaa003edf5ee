from collections import Counter

import pytest

from ner.labels import ENTITY_TYPES, is_valid_iob2, mention_spans
from tests.conftest import SHARED_DATA
from training.augment import (
    augment,
    build_lexicons,
    read_obo_terms,
    tokenize,
)
from training.craft import Sentence, read_splits


@pytest.fixture(scope="module")
def real_splits(craft_dir):
    return read_splits(craft_dir)


@pytest.fixture(scope="module")
def real_lexicons(real_splits):
    return build_lexicons(real_splits["train"].sentences, SHARED_DATA / "ontologies")


@pytest.fixture(scope="module")
def augmented(real_splits, real_lexicons):
    return augment(real_splits["train"].sentences, real_lexicons, rate=0.2, seed=42)


def test_tokenize_splits_punctuation_like_craft():
    assert tokenize("T-cell (CD4+) lymphocyte's") == (
        "T",
        "-",
        "cell",
        "(",
        "CD4",
        "+",
        ")",
        "lymphocyte",
        "'",
        "s",
    )


def test_obo_terms_keep_names_and_exact_synonyms_only(tmp_path):
    obo = tmp_path / "x.obo"
    obo.write_text(
        "format-version: 1.2\n\n"
        "[Term]\nid: CL:1\nname: neuron\n"
        'synonym: "nerve cell" EXACT []\nsynonym: "neurone" RELATED []\n\n'
        "[Term]\nid: CL:2\nname: obsolete thing\n"
        'synonym: "old" EXACT []\nis_obsolete: true\n\n'
        "[Term]\nid: UBERON:3\nname: imported organ\n\n"
        "[Typedef]\nid: part_of\nname: part of\n"
    )
    assert read_obo_terms(obo, "CL") == ["neuron", "nerve cell"]


def test_lexicons_use_training_mentions_and_ontologies(real_splits, real_lexicons):
    train_forms = {
        tuple(s.tokens[a:b])
        for s in real_splits["train"].sentences
        for a, b, kind in mention_spans(s.tags)
        if kind == "Protein"
    }
    assert set(real_lexicons["Protein"]) == train_forms
    # CL and SO add many terms on top of the training mentions
    assert tokenize("nerve cell") in real_lexicons["Cell"]
    assert len(real_lexicons["Sequence"]) > 2000
    devel_only = {
        tuple(s.tokens[a:b])
        for s in real_splits["devel"].sentences
        for a, b, kind in mention_spans(s.tags)
        if kind == "Protein"
    } - train_forms
    assert devel_only and not devel_only & set(real_lexicons["Protein"])


def test_augmentation_invariants_on_real_training_split(real_splits, augmented):
    original = real_splits["train"].sentences
    copy, stats = augmented
    assert len(copy) == len(original) == 10875
    assert all(is_valid_iob2(s.tags) for s in copy)
    assert all(len(s.tokens) == len(s.tags) for s in copy)
    for kind in ENTITY_TYPES:
        assert 0.17 <= stats.share(kind) <= 0.23, (kind, stats.share(kind))
    total = sum(stats.replaced.values()) / sum(stats.mentions.values())
    assert 0.17 <= total <= 0.23


def test_replaced_mentions_keep_their_type(real_splits, augmented):
    copy, stats = augmented
    changed = Counter()
    for before, after in zip(real_splits["train"].sentences, copy, strict=True):
        spans_before = mention_spans(before.tags)
        spans_after = mention_spans(after.tags)
        # same mentions in the same order, each with the same type
        assert [k for *_, k in spans_before] == [k for *_, k in spans_after]
        for (a, b, kind), (c, d, _) in zip(spans_before, spans_after, strict=True):
            if before.tokens[a:b] != after.tokens[c:d]:
                changed[kind] += 1
    assert changed == stats.replaced


def test_augmentation_is_deterministic_and_seed_dependent(real_splits, real_lexicons, augmented):
    again, _ = augment(real_splits["train"].sentences, real_lexicons, rate=0.2, seed=42)
    other, _ = augment(real_splits["train"].sentences, real_lexicons, rate=0.2, seed=7)
    assert again == augmented[0]
    assert other != augmented[0]


def test_user_lexicon_replaces_a_type(tmp_path):
    lexicon = tmp_path / "taxa.txt"
    lexicon.write_text("# my taxa\nDanio rerio\n\nzebra-fish\n")
    train = [Sentence(["mice", "and", "rats"], ["B-Taxon", "O", "B-Taxon"])]
    lexicons = build_lexicons(train, None, {"Taxon": lexicon})
    assert lexicons["Taxon"] == [("Danio", "rerio"), ("zebra", "-", "fish")]
    copy, stats = augment(train, lexicons, rate=1.0, seed=1)
    assert stats.replaced["Taxon"] == 2
    assert copy[0].tags[0] == "B-Taxon" and is_valid_iob2(copy[0].tags)
    with pytest.raises(ValueError, match="unknown type"):
        build_lexicons(train, None, {"Disease": lexicon})

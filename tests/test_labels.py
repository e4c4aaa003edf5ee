import pytest

from ner.labels import (
    CRAFT_CODES,
    ENTITY_TYPES,
    ID2LABEL,
    LABEL2ID,
    LABELS,
    UnknownLabelError,
    canonical_tag,
    is_valid_iob2,
    map_model_labels,
    mention_spans,
    to_iob2,
)


def test_scheme_has_six_types_in_bio():
    assert ENTITY_TYPES == ("Chemical", "Cell", "Protein", "Gene", "Sequence", "Taxon")
    assert len(LABELS) == 13 and LABELS[0] == "O"
    assert {CRAFT_CODES[t] for t in ENTITY_TYPES} == {"CHEBI", "CL", "GGP", "GO", "SO", "Taxon"}


def test_id2label_and_label2id_are_inverse():
    assert all(LABEL2ID[label] == i for i, label in ID2LABEL.items())
    assert sorted(ID2LABEL) == list(range(len(LABELS)))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("B-GGP", "B-Protein"),
        ("I-CHEBI", "I-Chemical"),
        ("B-GO", "B-Gene"),
        ("B-GENE", "B-Gene"),
        ("i-taxon", "I-Taxon"),
        ("B_SEQUENCE", "B-Sequence"),
        ("B-CL", "B-Cell"),
        ("o", "O"),
    ],
)
def test_spellings_map_onto_the_scheme(raw, expected):
    assert canonical_tag(raw) == expected


@pytest.mark.parametrize("raw", ["B-Disease", "X-GGP", "B-", "GGP", ""])
def test_unknown_spellings_are_rejected(raw):
    assert canonical_tag(raw) is None


def test_published_model_labels_map_both_ways():
    published = {0: "O", 1: "B-GENE", 2: "I-GENE", 3: "B-PROTEIN", 4: "I-GGP"}
    mapped = map_model_labels(published)
    assert mapped == {0: "O", 1: "B-Gene", 2: "I-Gene", 3: "B-Protein", 4: "I-Protein"}
    assert map_model_labels({str(i): label for i, label in ID2LABEL.items()}) == ID2LABEL


def test_model_with_unknown_tags_names_them():
    with pytest.raises(UnknownLabelError) as err:
        map_model_labels({0: "O", 1: "B-DISEASE", 2: "I-DISEASE", 3: "B-GENE"})
    assert err.value.tags == ["B-DISEASE", "I-DISEASE"]
    assert "B-DISEASE" in str(err.value) and "B-GENE" not in str(err.value)


def test_iob2_repair_counts_fixes():
    tags = ["I-Cell", "I-Cell", "O", "B-Gene", "I-Taxon", "I-Gene"]
    fixed, fixes = to_iob2(tags)
    assert fixed == ["B-Cell", "I-Cell", "O", "B-Gene", "B-Taxon", "B-Gene"]
    assert fixes == 3
    assert is_valid_iob2(fixed) and not is_valid_iob2(tags)


def test_mention_spans():
    tags = ["B-Cell", "I-Cell", "B-Cell", "O", "B-Gene", "I-Gene"]
    assert mention_spans(tags) == [(0, 2, "Cell"), (2, 3, "Cell"), (4, 6, "Gene")]

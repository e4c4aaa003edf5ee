import pytest

from training.metrics import entity_report, evaluation_metrics, per_type_table, token_accuracy

GOLD = [
    ["B-Cell", "I-Cell", "O", "B-Gene"],
    ["O", "B-Taxon", "O", "B-Chemical", "I-Chemical"],
]


def test_perfect_prediction_scores_one():
    report = entity_report(GOLD, GOLD)
    assert report["micro avg"]["f1"] == 1.0
    assert report["Cell"]["support"] == 1 and report["Protein"]["support"] == 0


def test_known_partial_answer():
    # Cell boundary wrong (miss + false positive), Gene right, Taxon missed,
    # Chemical right: 2 of 3 predicted correct, 2 of 4 gold found.
    pred = [
        ["B-Cell", "O", "O", "B-Gene"],
        ["O", "O", "O", "B-Chemical", "I-Chemical"],
    ]
    report = entity_report(GOLD, pred)
    assert report["micro avg"]["precision"] == pytest.approx(2 / 3)
    assert report["micro avg"]["recall"] == pytest.approx(2 / 4)
    assert report["micro avg"]["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert report["Taxon"]["recall"] == 0.0 and report["Gene"]["f1"] == 1.0
    assert token_accuracy(GOLD, pred) == pytest.approx(7 / 9)


def test_strict_mode_rejects_ill_formed_mentions():
    gold = [["B-Cell", "I-Cell", "O"]]
    pred = [["I-Cell", "I-Cell", "O"]]  # default mode accepts an I- opening a mention
    assert entity_report(gold, pred)["micro avg"]["f1"] == 1.0
    assert entity_report(gold, pred, strict=True)["micro avg"]["f1"] == 0.0


def test_flat_metrics_and_table():
    metrics = evaluation_metrics(GOLD, GOLD)
    assert metrics["devel_f1"] == 1.0 and metrics["devel_strict_f1"] == 1.0
    assert metrics["devel_sentences"] == 2 and metrics["devel_Cell_support"] == 1
    table = per_type_table(metrics)
    assert "| Cell | 1.0000 |" in table and table.count("\n") == 8


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sentence 0"):
        entity_report([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        entity_report([["O"]], [["O"], ["O"]])

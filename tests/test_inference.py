import numpy as np
import pytest

from ner import columns as C
from ner.inference import TokenClassifierStage
from ner.labels import LABELS
from ner.windowing import TokenizeStage


@pytest.fixture(scope="module")
def tokenized(tiny_model_dir):
    stage = TokenizeStage(str(tiny_model_dir), ["text"], "id", max_length=16, stride=4)
    texts = [
        "Aspirin inhibits COX-1.",
        None,
        "The p53 protein binds Mdm2 in human cells. " * 4,
        "short",
        "   ",
    ]
    return stage({"id": list("abcde"), "text": texts})


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return TokenClassifierStage(str(tiny_model_dir), micro_batch_size=3)


def test_classifier_stage_on_five_rows(classifier, tokenized):
    out = classifier(tokenized).to_pylist()
    for row in out:
        assert len(row[C.I_PRED_IDS]) == len(row[C.I_INPUT_IDS])
        for ids, scores, window in zip(
            row[C.I_PRED_IDS], row[C.I_PRED_SCORES], row[C.I_INPUT_IDS], strict=True
        ):
            assert len(ids) == len(scores) == len(window)
            assert all(0 <= i < len(LABELS) for i in ids)
            assert all(1 / len(LABELS) - 1e-6 <= s <= 1 for s in scores)
    assert out[1][C.I_PRED_IDS] == [] and out[4][C.I_PRED_IDS] == []
    assert [r[C.I_STATUS] for r in out] == ["ok", "empty_text", "ok", "ok", "empty_text"]


def test_predictions_do_not_depend_on_batch_company_or_padding(classifier, tokenized):
    together = classifier(tokenized).to_pylist()
    for i in (0, 2, 3):
        alone = classifier(tokenized.slice(i, 1)).to_pylist()[0]
        for a, b in zip(alone[C.I_PRED_SCORES], together[i][C.I_PRED_SCORES], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert alone[C.I_PRED_IDS] == together[i][C.I_PRED_IDS]


def test_model_loads_once_per_stage(tiny_model_dir, tokenized, monkeypatch):
    import ner.model

    calls = []
    real = ner.model.load_classifier
    monkeypatch.setattr(ner.model, "load_classifier", lambda ref: calls.append(ref) or real(ref))
    stage = TokenClassifierStage(str(tiny_model_dir))
    stage(tokenized)
    stage(tokenized)
    assert len(calls) == 1


def test_a_failing_forward_rejects_its_documents_only(classifier, tokenized, monkeypatch):
    original = classifier._forward

    def flaky(sequences):
        if any(len(s) == 3 for s in sequences):  # the short document's window
            raise RuntimeError("boom")
        return original(sequences)

    monkeypatch.setattr(classifier, "_forward", flaky)
    lengths = [[len(w) for w in doc] for doc in tokenized.column(C.I_INPUT_IDS).to_pylist()]
    assert [3] in lengths
    classifier.micro_batch_size = 1
    try:
        out = classifier(tokenized).to_pylist()
    finally:
        classifier.micro_batch_size = 3
    bad = [r for r in out if r[C.I_STATUS] == "rejected"]
    assert [r[C.DOC_ID] for r in bad] == [out[lengths.index([3])][C.DOC_ID]]
    assert "boom" in bad[0][C.I_REASON] and bad[0][C.I_PRED_IDS] == []
    assert out[0][C.I_PRED_IDS]


def test_classifier_names_missing_columns(classifier):
    with pytest.raises(C.MissingColumnError, match="_input_ids"):
        classifier({"doc_id": ["a"], C.I_STATUS: ["ok"]})

"""Constrained (valid-BIO) decoding: the kernel, the decode stage and training-time evaluation."""

import itertools

import numpy as np
import pyarrow as pa
import pytest
import torch

from ner import columns as C
from ner.columns import MissingColumnError
from ner.decode import SpanDecodeStage
from ner.labels import LABEL2ID, LABELS
from ner.viterbi import N_LABELS, bio_viterbi, constrain, invalid_steps
from training.batching import Encoded, word_predictions

OUT = LABEL2ID["O"]
BC, IC = LABEL2ID["B-Chemical"], LABEL2ID["I-Chemical"]
BP, IP = LABEL2ID["B-Protein"], LABEL2ID["I-Protein"]


def random_logp(rng, n, peaked=0.3):
    """Log-probabilities; small ``peaked`` gives some exact zeros (-inf), as fp16 can."""
    with np.errstate(divide="ignore"):
        return np.log(rng.dirichlet(np.full(N_LABELS, peaked), size=n)).astype(np.float32)


def starts_of(lengths):
    starts = np.zeros(int(np.sum(lengths)), dtype=bool)
    starts[(np.cumsum(lengths) - lengths)[np.asarray(lengths) > 0]] = True
    return starts


def path_score(logp, labels):
    return float(logp[np.arange(len(labels)), labels].sum())


@pytest.mark.parametrize("seed", range(5))
def test_never_an_invalid_sequence(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=200)
    # Peaked at I- labels so that most argmax sequences are invalid.
    logp = random_logp(rng, int(lengths.sum()), peaked=0.1)
    starts = starts_of(lengths)
    assert invalid_steps(logp.argmax(1), starts).any()
    best = bio_viterbi(logp, starts)
    assert not invalid_steps(best, starts).any()
    # ... and never worse than the argmax made valid by reading I-X as B-X, per sequence.
    repaired = logp.argmax(1)
    fix = invalid_steps(repaired, starts)
    repaired[fix] -= 1  # I-X -> B-X
    for a, b in zip(np.cumsum(lengths) - lengths, np.cumsum(lengths), strict=True):
        assert path_score(logp[a:b], best[a:b]) >= path_score(logp[a:b], repaired[a:b]) - 1e-4


def test_optimal_against_every_valid_sequence():
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(1, 4))
        logp = random_logp(rng, n, peaked=0.2)
        starts = starts_of([n])
        best = bio_viterbi(logp, starts)
        top = max(
            path_score(logp, np.array(seq))
            for seq in itertools.product(range(N_LABELS), repeat=n)
            if not invalid_steps(np.array(seq), starts).any()
        )
        assert path_score(logp, best) == pytest.approx(top, abs=1e-5)


def test_equal_to_the_argmax_when_the_argmax_is_valid():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 30, size=100)
    n = int(lengths.sum())
    starts = starts_of(lengths)
    labels = rng.choice([OUT, BC, BP], size=n)
    labels[1:][(labels[:-1] == BC)[: n - 1] & ~starts[1:]] = IC  # B-X I-X pairs: valid
    assert not invalid_steps(labels, starts).any()
    logp = random_logp(rng, n)
    logp[np.arange(n), labels] = 0.5  # above every log-probability: the argmax
    np.testing.assert_array_equal(bio_viterbi(logp, starts), labels)


def test_batch_equals_one_sequence_at_a_time():
    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 50, size=120)
    logp = random_logp(rng, int(lengths.sum()), peaked=0.1)
    together = bio_viterbi(logp, starts_of(lengths))
    for a, b in zip(np.cumsum(lengths) - lengths, np.cumsum(lengths), strict=True):
        alone = bio_viterbi(logp[a:b], starts_of([b - a]))
        np.testing.assert_array_equal(together[a:b], alone)


def test_a_hand_built_broken_span_becomes_one_mention():
    # Argmax: B-Protein I-Chemical (invalid). Reading I- as B- gives two one-word
    # mentions of two types; the best valid path is one two-word Chemical mention:
    # log .4 + log .9 beats log .6 + log .05.
    probs = np.full((3, N_LABELS), 1e-4)
    probs[0, [BP, BC]] = 0.6, 0.4
    probs[1, [IC, IP]] = 0.9, 0.05
    probs[2, OUT] = 0.99
    logp = np.log(probs / probs.sum(1, keepdims=True)).astype(np.float32)
    assert logp.argmax(1).tolist() == [BP, IC, OUT]
    assert bio_viterbi(logp, starts_of([3])).tolist() == [BC, IC, OUT]
    labels, scores, changed = constrain(
        logp.argmax(1), np.exp(logp.max(1)), starts_of([3]), lambda k: logp[k]
    )
    assert labels.tolist() == [BC, IC, OUT] and changed.tolist() == [True, False, False]
    assert scores[0] == pytest.approx(0.4, abs=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_splitting_at_confident_o_words_keeps_the_optimum(seed):
    # Mostly confident O with scattered uncertain entity words: anchors split the
    # sequences into short stretches; the result must score as the full Viterbi.
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 80, size=150)
    n = int(lengths.sum())
    logp = random_logp(rng, n, peaked=0.05 if seed % 2 else 0.5)
    confident = rng.random(n) < 0.7
    logp[confident] = np.log(np.full(N_LABELS, 1e-3 / (N_LABELS - 1)))
    logp[confident, OUT] = np.log(1 - 1e-3)
    starts = starts_of(lengths)
    labels, scores, changed = constrain(
        logp.argmax(1), np.exp(logp.max(1)), starts, lambda k: logp[k]
    )
    full = bio_viterbi(logp, starts)
    assert not invalid_steps(labels, starts).any()
    for a, b in zip(np.cumsum(lengths) - lengths, np.cumsum(lengths), strict=True):
        assert path_score(logp[a:b], labels[a:b]) == pytest.approx(
            path_score(logp[a:b], full[a:b]), abs=1e-4
        )
    np.testing.assert_array_equal(changed, labels != logp.argmax(1))
    np.testing.assert_allclose(scores, np.exp(logp[np.arange(n), labels]), rtol=1e-5)


def test_a_sequence_never_starts_inside_even_when_split_mid_mention():
    logp = np.log(np.full((4, N_LABELS), 1e-3, dtype=np.float32))
    logp[:, IC] = np.log(0.9)
    # Two sequences of two words: each must open with B-Chemical, not continue the other.
    assert bio_viterbi(logp, np.array([True, False, True, False])).tolist() == [BC, IC, BC, IC]


def test_constrain_reads_only_the_sequences_it_fixes():
    logp = np.log(np.full((5, N_LABELS), 1e-3, dtype=np.float32))
    labels = np.array([BC, IC, OUT, IC, OUT])
    logp[np.arange(5), labels] = 0.0
    seen = []
    starts = np.array([True, False, True, False, False])
    constrain(labels, np.ones(5), starts, lambda k: (seen.append(k), logp[k])[1])
    assert [k.tolist() for k in seen] == [[2, 3, 4]]


def _decode_table(pred_ids, logp):
    """One document "a b c" (words a, b, c; one window) with its predictions and log-probs."""
    i32 = pa.list_(pa.int32())
    flat = pa.array(np.asarray(logp, np.float16).reshape(-1))
    vectors = pa.FixedSizeListArray.from_arrays(flat, N_LABELS)
    inner = pa.ListArray.from_arrays(pa.array([0, len(logp)], pa.int32()), vectors)
    return pa.table(
        {
            C.DOC_ID: ["d"],
            C.I_TEXT: ["a b c"],
            C.I_STATUS: ["ok"],
            C.I_SEGMENTS: pa.array([[]], pa.list_(pa.string())),
            C.I_SEGMENT_STARTS: pa.array([[]], i32),
            C.I_TOKEN_START: pa.array([[0, 2, 4]], i32),
            C.I_TOKEN_END: pa.array([[1, 3, 5]], i32),
            C.I_WORD_IDS: pa.array([[0, 1, 2]], i32),
            C.I_OWNER: pa.array([[0, 0, 0]], i32),
            C.I_WINDOW_STARTS: pa.array([[0]], i32),
            C.I_CONTENT_OFFSET: pa.array([1], pa.int32()),
            C.I_PRED_IDS: pa.array([[pred_ids]], pa.list_(pa.list_(pa.int16()))),
            C.I_PRED_SCORES: pa.array(
                [[np.exp(np.max(logp, 1)).tolist()]], pa.list_(pa.list_(pa.float32()))
            ),
            C.I_PRED_LOGP: pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), inner),
        }
    )


def _broken_logp():
    """[CLS] a b c [SEP]: a is B-Protein .6 / B-Chemical .4, b is I-Chemical .9."""
    probs = np.full((5, N_LABELS), 1e-4)
    probs[:, OUT] = 0.99
    probs[1, [BP, BC, OUT]] = 0.6, 0.4, 1e-4
    probs[2, [IC, IP, OUT]] = 0.9, 0.05, 1e-4
    return np.log(probs / probs.sum(1, keepdims=True))


def test_the_decode_stage_fixes_the_span_with_viterbi_and_splits_it_with_argmax():
    logp = _broken_logp()
    table = _decode_table(logp.argmax(1).tolist(), logp)
    viterbi = SpanDecodeStage("viterbi")(table).to_pylist()[0]
    argmax = SpanDecodeStage("argmax")(table).to_pylist()[0]
    assert [(e["text"], e["label"]) for e in viterbi[C.ENTITIES]] == [("a b", "Chemical")]
    # The changed word scores its new label's probability, the other its own.
    expected = (np.exp(logp[1, BC]) + np.exp(logp[2, IC])) / 2
    assert viterbi[C.ENTITIES][0]["score"] == pytest.approx(expected, abs=2e-3)
    assert [(e["text"], e["label"]) for e in argmax[C.ENTITIES]] == [
        ("a", "Protein"),
        ("b", "Chemical"),
    ]
    assert viterbi["_bio_repairs"] == 1 and argmax["_bio_repairs"] == 1


def test_min_score_drops_mentions_below_their_types_threshold():
    logp = _broken_logp()
    table = _decode_table(logp.argmax(1).tolist(), logp)
    assert SpanDecodeStage("viterbi", {"Chemical": 0.7})(table).to_pylist()[0][C.ENTITIES] == []
    kept = SpanDecodeStage("viterbi", {"Chemical": 0.6, "Protein": 0.99})(table)
    assert [e["text"] for e in kept.to_pylist()[0][C.ENTITIES]] == ["a b"]
    with pytest.raises(ValueError, match="Gene_product"):
        SpanDecodeStage("viterbi", {"Gene_product": 0.5})


def test_viterbi_needs_the_log_probabilities():
    logp = _broken_logp()
    table = _decode_table(logp.argmax(1).tolist(), logp).drop_columns([C.I_PRED_LOGP])
    with pytest.raises(MissingColumnError, match=C.I_PRED_LOGP):
        SpanDecodeStage("viterbi")(table)


def test_log_probabilities_not_shaped_like_the_predictions_reject_the_document():
    logp = _broken_logp()
    table = _decode_table(logp.argmax(1).tolist(), logp)
    short = _decode_table(logp.argmax(1).tolist(), logp[:4]).column(C.I_PRED_LOGP)
    table = table.set_column(table.column_names.index(C.I_PRED_LOGP), C.I_PRED_LOGP, short)
    row = SpanDecodeStage("viterbi")(table).to_pylist()[0]
    assert row[C.STATUS] == "rejected" and C.I_PRED_LOGP in row[C.I_REASON]


@pytest.fixture(scope="module")
def reordered_model_dir(tmp_path_factory):
    """A tiny model whose label ids are not ours (as a published model's may be)."""
    from ner.model import save_tiny_model

    order = np.random.default_rng(1).permutation(N_LABELS).tolist()
    id2label = {i: LABELS[c] for i, c in enumerate(order)}
    return save_tiny_model(
        tmp_path_factory.mktemp("reordered"),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )


@pytest.mark.parametrize("which", ["ours", "reordered"])
def test_the_classifier_writes_log_probabilities_that_agree_with_its_labels(
    which, tiny_model_dir, reordered_model_dir
):
    from ner.inference import TokenClassifierStage
    from ner.windowing import TokenizeStage

    model = str(tiny_model_dir if which == "ours" else reordered_model_dir)
    tokenized = TokenizeStage(model, ["text"], "id", max_length=16, stride=4)(
        {"id": ["a", "b"], "text": ["Aspirin inhibits COX-1.", "p53 binds Mdm2. " * 5]}
    )
    out = TokenClassifierStage(model, token_budget=48, log_probs=True)(tokenized)
    ids = np.concatenate([np.concatenate(d) for d in out.column(C.I_PRED_IDS).to_pylist()])
    scores = np.concatenate([np.concatenate(d) for d in out.column(C.I_PRED_SCORES).to_pylist()])
    logp = np.array(
        [v for d in out.column(C.I_PRED_LOGP).to_pylist() for w in d for v in w], np.float32
    )
    assert logp.shape == (len(ids), len(LABELS))
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, atol=1e-2)
    np.testing.assert_allclose(np.exp(logp[np.arange(len(ids)), ids]), scores, atol=2e-3)
    assert (logp.max(1) - logp[np.arange(len(ids)), ids] < 2e-3).all()  # fp16 ties only


def test_training_evaluation_decodes_like_the_annotation_job():
    # Two sentences of two words (one sub-token each after [CLS]).
    examples = [Encoded([101, 1, 2, 102], [0] * 4, [1, 2]) for _ in range(2)]
    logits = torch.full((2, 4, N_LABELS), -5.0)
    logits[:, 1, BP], logits[:, 1, BC] = 2.0, 1.6
    logits[:, 2, IC] = 4.0
    assert word_predictions(logits, examples, "argmax") == [[BP, IC], [BP, IC]]
    assert word_predictions(logits, examples, "viterbi") == [[BC, IC], [BC, IC]]
    # A model whose label ids are in another order gives the same canonical answer.
    order = np.random.default_rng(0).permutation(N_LABELS)  # model id i is canonical order[i]
    permuted = torch.empty_like(logits)
    permuted[..., torch.arange(N_LABELS)] = logits[..., torch.from_numpy(order)]
    assert word_predictions(permuted, examples, "viterbi", canonical=order) == [[BC, IC]] * 2

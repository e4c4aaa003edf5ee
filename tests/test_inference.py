import numpy as np
import pyarrow as pa
import pytest

from ner import columns as C
from ner.inference import TokenClassifierStage
from ner.labels import LABEL2ID, LABELS
from ner.packing import batch_shape, pack_windows, windows_from_arrow
from ner.windowing import TokenizeStage

_I32_LIST2 = pa.list_(pa.list_(pa.int32()))


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
    return TokenClassifierStage(str(tiny_model_dir), token_budget=48)


def random_documents(seed: int = 0, n_docs: int = 40, longest: int = 48) -> pa.Table:
    """Documents of 0-4 windows of 2..longest ids ([CLS] ... [SEP]), some rejected upstream."""
    rng = np.random.default_rng(seed)
    docs, status = [], []
    for d in range(n_docs):
        count = int(rng.integers(0, 5))
        windows = []
        for _ in range(count):
            body = rng.integers(1000, 30000, size=int(rng.integers(0, longest - 1))).tolist()
            windows.append([101, *body, 102])
        if d == 1:
            windows.append([101, *range(2000, 2000 + longest - 2), 102])  # the longest, exactly
        docs.append(windows)
        status.append("ok" if windows else "empty_text")
    status[5] = C.STATUS_REJECTED if docs[5] else status[5]
    return pa.table(
        {
            C.DOC_ID: [str(d) for d in range(n_docs)],
            C.I_INPUT_IDS: pa.array(docs, _I32_LIST2),
            C.I_STATUS: status,
        }
    )


@pytest.fixture(scope="module")
def documents() -> pa.Table:
    return random_documents()


@pytest.fixture(scope="module")
def reference(tiny_model_dir, documents):
    """Per document, per window: (ids, scores, top-2 margin), each window run alone, unpadded, fp32."""
    import torch

    from ner.model import load_classifier

    loaded = load_classifier(str(tiny_model_dir))
    lookup = np.array([LABEL2ID[loaded.id2label[i]] for i in range(len(loaded.id2label))])
    out = []
    with torch.inference_mode():
        for windows in documents.column(C.I_INPUT_IDS).to_pylist():
            per_doc = []
            for window in windows:
                logits = loaded.model(input_ids=torch.tensor([window])).logits[0]
                probabilities = torch.softmax(logits.float(), dim=-1)
                top = probabilities.topk(2, dim=-1).values
                scores, best = probabilities.max(dim=-1)
                margin = (top[:, 0] - top[:, 1]).numpy()
                per_doc.append((lookup[best.numpy()], scores.numpy(), margin))
            out.append(per_doc)
    return out


def assert_matches_reference(out: list[dict], expected: list, atol: float = 1e-5) -> None:
    for row, per_doc in zip(out, expected, strict=True):
        if row[C.I_STATUS] == C.STATUS_REJECTED or not per_doc:
            assert not row.get(C.I_REASON, "").startswith("inference error"), row[C.I_REASON]
            assert row[C.I_PRED_IDS] == [] and row[C.I_PRED_SCORES] == []
            continue
        assert len(row[C.I_PRED_IDS]) == len(per_doc)
        for ids, scores, (want_ids, want_scores, margin) in zip(
            row[C.I_PRED_IDS], row[C.I_PRED_SCORES], per_doc, strict=True
        ):
            np.testing.assert_allclose(scores, want_scores, rtol=0, atol=atol)
            # A random model's top two labels may be closer than float noise: only
            # where they are clearly apart must the label itself agree.
            clear = margin > 1e-4
            np.testing.assert_array_equal(np.asarray(ids)[clear], want_ids[clear])


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


def test_output_columns_keep_their_types(classifier, documents):
    out = classifier(documents)
    assert out.schema.field(C.I_PRED_IDS).type == pa.list_(pa.list_(pa.int16()))
    assert out.schema.field(C.I_PRED_SCORES).type == pa.list_(pa.list_(pa.float32()))
    assert out.schema.field(C.I_REASON).type == pa.string()


def test_predictions_do_not_depend_on_batch_company_or_padding(classifier, tokenized):
    together = classifier(tokenized).to_pylist()
    for i in (0, 2, 3):
        alone = classifier(tokenized.slice(i, 1)).to_pylist()[0]
        for a, b in zip(alone[C.I_PRED_SCORES], together[i][C.I_PRED_SCORES], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert alone[C.I_PRED_IDS] == together[i][C.I_PRED_IDS]


@pytest.mark.parametrize("budget", [1, 16, 50, 300, 100_000])
def test_predictions_equal_each_window_run_alone(classifier, documents, reference, budget):
    longest = max(len(w) for doc in documents.column(C.I_INPUT_IDS).to_pylist() for w in doc)
    assert longest == 48  # so budgets 1 and 16 are smaller than the longest window
    classifier.token_budget = budget
    try:
        out = classifier(documents).to_pylist()
    finally:
        classifier.token_budget = 48
    assert_matches_reference(out, reference)


@pytest.mark.parametrize("budget", [1, 50, 1000])
def test_cuda_shape_padding_changes_no_result(tiny_model_dir, documents, reference, budget):
    """Widths rounded up to 16 and rows to 8 with filler rows, as on CUDA: same results."""
    stage = TokenClassifierStage(str(tiny_model_dir), token_budget=budget, shape_multiples=(16, 8))
    shapes, fillers, forward = [], [], stage._forward

    def recorded(ids, lengths):
        shapes.append(ids.shape)
        fillers.append(int((lengths == 1).sum()))  # real windows hold [CLS] and [SEP]
        return forward(ids, lengths)

    stage._forward = recorded
    out = stage(documents).to_pylist()
    assert [i for i, r in enumerate(out) if r[C.I_STATUS] == C.STATUS_REJECTED] == [5]
    assert_matches_reference(out, reference)
    assert shapes and all(width % 16 == 0 for _, width in shapes)
    if budget == 1000:  # room for more rows: the last batch was topped up
        assert sum(fillers) > 0


def test_chunked_and_sliced_columns(classifier, documents, reference):
    chunked = pa.concat_tables([documents.slice(0, 7), documents.slice(7, 9), documents.slice(16)])
    assert chunked.column(C.I_INPUT_IDS).num_chunks == 3
    assert_matches_reference(classifier(chunked).to_pylist(), reference)
    sliced = documents.slice(3, 20)
    assert_matches_reference(classifier(sliced).to_pylist(), reference[3:23])
    both = pa.concat_tables([documents.slice(2, 5), documents.slice(11, 6)])
    assert_matches_reference(classifier(both).to_pylist(), reference[2:7] + reference[11:17])


def test_fp16_scores_as_on_cuda(tiny_model_dir, documents, reference):
    import torch

    stage = TokenClassifierStage(str(tiny_model_dir), token_budget=64)
    stage.score_dtype = torch.float16  # what the CUDA path brings back; slots are made lazily
    assert_matches_reference(stage(documents).to_pylist(), reference, atol=1e-3)


def test_two_batches_in_flight(tiny_model_dir, documents, monkeypatch):
    stage = TokenClassifierStage(str(tiny_model_dir), token_budget=64)
    log: list[tuple[str, int]] = []
    launch, collect = stage._launch, stage._collect

    def logged_launch(slot, windows, batch):
        log.append(("launch", int(batch[0])))
        return launch(slot, windows, batch)

    def logged_collect(flight, *args):
        log.append(("collect", int(flight.batch[0])))
        return collect(flight, *args)

    monkeypatch.setattr(stage, "_launch", logged_launch)
    monkeypatch.setattr(stage, "_collect", logged_collect)
    stage(documents)
    _, lengths = _runnable(documents)
    firsts = [int(b[0]) for b in pack_windows(lengths, 64)]
    assert len(firsts) > 3
    # Batch i is collected only once batch i + 1 is queued behind it.
    expected = [("launch", firsts[0])]
    for previous, current in zip(firsts, firsts[1:], strict=False):
        expected += [("launch", current), ("collect", previous)]
    assert log == expected + [("collect", firsts[-1])]


def _runnable(table: pa.Table):
    """(windows, their lengths with upstream-rejected documents' zeroed, as the stage does)."""
    windows = windows_from_arrow(table.column(C.I_INPUT_IDS))
    rejected = np.array([s == C.STATUS_REJECTED for s in table.column(C.I_STATUS).to_pylist()])
    return windows, np.where(np.repeat(rejected, windows.windows_per_doc), 0, windows.lengths)


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

    def flaky(ids, lengths):
        if bool((lengths == 3).any()):  # the short document's window
            raise RuntimeError("boom")
        return original(ids, lengths)

    monkeypatch.setattr(classifier, "_forward", flaky)
    lengths = [[len(w) for w in doc] for doc in tokenized.column(C.I_INPUT_IDS).to_pylist()]
    assert [3] in lengths
    monkeypatch.setattr(classifier, "token_budget", 1)  # one window per batch
    out = classifier(tokenized).to_pylist()
    bad = [r for r in out if r[C.I_STATUS] == "rejected"]
    assert [r[C.DOC_ID] for r in bad] == [out[lengths.index([3])][C.DOC_ID]]
    assert "boom" in bad[0][C.I_REASON] and bad[0][C.I_PRED_IDS] == []
    assert out[0][C.I_PRED_IDS]


@pytest.mark.parametrize("where", ["forward", "collect"])
def test_a_failing_batch_rejects_the_documents_with_a_window_in_it(
    tiny_model_dir, documents, reference, monkeypatch, where
):
    """A batch mixing several documents fails, in its launch or (as an asynchronous
    device error would) when its results are awaited: exactly its documents are rejected."""
    budget, failing = 120, 2
    stage = TokenClassifierStage(str(tiny_model_dir), token_budget=budget)
    windows, lengths = _runnable(documents)
    batches = pack_windows(lengths, budget)
    victims = set(np.unique(windows.doc_of_window()[batches[failing]]).tolist())
    assert len(victims) > 1 and len(batches) > failing + 2
    calls = []
    if where == "forward":
        original = stage._forward

        def flaky(ids, lengths):
            calls.append(1)
            if len(calls) == failing + 1:
                raise RuntimeError("boom")
            return original(ids, lengths)

        monkeypatch.setattr(stage, "_forward", flaky)
    else:
        launch = stage._launch

        def poisoned(slot, windows, batch):
            flight = launch(slot, windows, batch)
            calls.append(1)
            if len(calls) == failing + 1:
                slot.done = _FailOnce(slot.done)
            return flight

        monkeypatch.setattr(stage, "_launch", poisoned)
    out = stage(documents).to_pylist()
    rejected = {i for i, r in enumerate(out) if r[C.I_STATUS] == C.STATUS_REJECTED}
    assert rejected == victims | {5}  # document 5 was rejected upstream
    for i in victims:
        assert out[i][C.I_REASON] == "inference error: RuntimeError: boom"
        assert out[i][C.I_PRED_IDS] == [] and out[i][C.I_PRED_SCORES] == []
    # Everyone else is annotated as if nothing had failed.
    assert_matches_reference(
        [r for i, r in enumerate(out) if i not in victims],
        [r for i, r in enumerate(reference) if i not in victims],
    )


class _FailOnce:
    """An event whose next wait raises, as a CUDA error surfaces at synchronisation."""

    def __init__(self, event):
        self.event, self.armed = event, True

    def record(self):
        self.event.record()

    def synchronize(self):
        if self.armed:
            self.armed = False
            raise RuntimeError("boom")
        self.event.synchronize()


def test_documents_without_windows_and_empty_batches(classifier):
    empty = pa.table(
        {C.I_INPUT_IDS: pa.array([], _I32_LIST2), C.I_STATUS: pa.array([], pa.string())}
    )
    out = classifier(empty)
    assert out.num_rows == 0 and C.I_PRED_IDS in out.column_names
    none = pa.table(
        {C.I_INPUT_IDS: pa.array([[], None, []], _I32_LIST2), C.I_STATUS: ["empty_text"] * 3}
    )
    out = classifier(none).to_pylist()
    assert [r[C.I_PRED_IDS] for r in out] == [[], [], []]
    assert [r[C.I_REASON] for r in out] == ["", "", ""]


def test_classifier_names_missing_columns(classifier):
    with pytest.raises(C.MissingColumnError, match="_input_ids"):
        classifier({"doc_id": ["a"], C.I_STATUS: ["ok"]})


# --- packing, without a model ------------------------------------------------


@pytest.mark.parametrize("budget", [1, 7, 40, 64, 1000])
def test_packing_respects_the_budget(budget):
    rng = np.random.default_rng(budget)
    lengths = rng.integers(0, 60, size=300)
    batches = pack_windows(lengths, budget)
    packed = np.concatenate(batches)
    assert sorted(packed.tolist()) == np.flatnonzero(lengths).tolist()  # each once, no empties
    widths = []
    for i, batch in enumerate(batches):
        width = int(lengths[batch].max())
        assert lengths[batch[0]] == width  # the first window is the widest
        assert len(batch) * width <= budget or len(batch) == 1
        if i < len(batches) - 1:  # greedy: the next window would not have fit
            assert (len(batch) + 1) * width > budget
        widths.append(width)
    assert widths == sorted(widths, reverse=True)  # longest first


def test_batch_shapes_are_few_and_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 513, size=5000)
    shapes = set()
    for chunk in np.array_split(lengths, 50):  # 50 calls, each with its own last batch
        for batch in pack_windows(chunk, 65536, width_multiple=16):
            rows, width = batch_shape(int(chunk[batch[0]]), len(batch), 65536, 16, 8)
            assert width % 16 == 0 and width - 16 < chunk[batch[0]] <= width
            assert len(batch) <= rows <= max(len(batch), 65536 // width)
            assert rows * width <= 65536 and (rows % 8 == 0 or rows == 65536 // width)
            shapes.add((rows, width))
    assert len(shapes) < 150  # exact shapes would number about 450 here
    assert batch_shape(700, 1, 512, 16, 8) == (1, 704)  # a window over the budget: alone


def test_packing_puts_an_oversized_window_alone():
    batches = pack_windows(np.array([5, 100, 5, 5]), 10)
    assert [b.tolist() for b in batches] == [[1], [0, 2], [3]]
    with pytest.raises(ValueError, match="token_budget"):
        pack_windows(np.array([5]), 0)


def test_windows_from_arrow_handles_chunks_slices_and_nulls():
    docs = [[[1, 2], [3]], None, [[4, 5, 6]], [], [[7], [8, 9]]]
    column = pa.array(docs, _I32_LIST2)
    for candidate, expected in [
        (column, docs),
        (column.slice(2, 3), docs[2:]),
        (pa.chunked_array([column.slice(0, 2), column.slice(3, 2)]), docs[:2] + docs[3:]),
        (pa.chunked_array([], _I32_LIST2), []),
    ]:
        windows = windows_from_arrow(candidate)
        flat = [t for doc in expected if doc for w in doc for t in w]
        assert windows.tokens.dtype == np.int32 and windows.tokens.tolist() == flat
        assert windows.windows_per_doc.tolist() == [len(doc or []) for doc in expected]
        assert windows.lengths.tolist() == [len(w) for doc in expected if doc for w in doc]
        rebuilt = windows.nested(windows.tokens).to_pylist()
        assert rebuilt == [doc or [] for doc in expected]

"""The vectorised decoder against the per-document one it replaced, on random batches.

The oracle is the old implementation, frozen in ``tests/decode_oracle.py``.
Batches mix what the pipeline produces: windows overlapping by a stride, several
text columns, tokens in no word (-1), combining marks after a token's end,
documents without tokens or rejected upstream, predictions that do not fit,
chunked and sliced tables.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest

from ner import columns as C
from ner.decode import SpanDecodeStage
from ner.labels import LABELS
from ner.windowing import assign_owners, window_starts
from tests.decode_oracle import SpanDecodeStage as OldDecodeStage

_I32 = pa.list_(pa.int32())
SCHEMA = pa.schema(
    [
        (C.DOC_ID, pa.string()),
        ("keep", pa.int64()),
        (C.I_SOURCE, pa.string()),
        (C.I_TEXT, pa.string()),
        (C.I_SEGMENTS, pa.list_(pa.string())),
        (C.I_SEGMENT_STARTS, _I32),
        (C.I_STATUS, pa.string()),
        (C.I_REASON, pa.string()),
        (C.I_CONTENT_OFFSET, pa.int32()),
        (C.I_WINDOW_STARTS, _I32),
        (C.I_TOKEN_START, _I32),
        (C.I_TOKEN_END, _I32),
        (C.I_WORD_IDS, _I32),
        (C.I_OWNER, _I32),
        (C.I_N_TOKENS, pa.int32()),
        (C.I_PRED_IDS, pa.list_(pa.list_(pa.int16()))),
        (C.I_PRED_SCORES, pa.list_(pa.list_(pa.float32()))),
    ]
)
LETTERS = list("abcdefxyz") * 4 + ["α", "β", "é", "Ω", "🧬", "Ｃ"]
MARKS = ["\u0301", "\u0308", "\u20dd"]  # Mn, Mn, Me
BROKEN = ("no predictions", "short window", "short scores", "unknown label")


def random_words(rng, n_words):
    """Words of random letters; some end in combining marks their last token does not cover."""
    words = []
    for _ in range(n_words):
        word = "".join(rng.choice(LETTERS, size=rng.integers(1, 7)))
        marks = "".join(rng.choice(MARKS, size=rng.integers(1, 3))) if rng.random() < 0.1 else ""
        words.append((word, marks))
    return words


def random_document(rng, k):
    names = ["title", "abstract", "body"][: rng.integers(0, 4)]
    columns = [random_words(rng, rng.integers(1, 12)) for _ in names] or [random_words(rng, 8)]
    text, segment_starts, starts, ends, word_ids = "", [], [], [], []
    word = 0
    for c, words in enumerate(columns):
        if c:
            text += " "
        segment_starts.append(len(text))
        for w, (letters, marks) in enumerate(words):
            if w:
                text += " "
            # 1-3 sub-tokens over the letters; the marks after them are in no token.
            cuts = sorted(rng.choice(np.arange(1, len(letters) + 1), size=min(len(letters), rng.integers(1, 4)), replace=False))  # fmt: skip
            begin = 0
            orphan = rng.random() < 0.05  # a token the tokenizer puts in no word
            for cut in cuts:
                starts.append(len(text) + begin)
                ends.append(len(text) + int(cut))
                word_ids.append(-1 if orphan else word)
                begin = int(cut)
            word += 1
            text += letters + marks
    status = rng.choice(["ok"] * 8 + ["empty_text", "rejected"])
    if status == "empty_text" or rng.random() < 0.05:  # no tokens (empty, or ok yet tokenless)
        starts, ends, word_ids = [], [], []
    n = len(starts)
    content = int(rng.integers(2, 9))
    stride = int(rng.integers(0, content))
    prefix, suffix = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    wstarts = window_starts(n, content, stride) if n else []
    owner = assign_owners(wstarts, n, content).tolist() if n else []
    ids, scores = [], []
    for s in wstarts:
        size = prefix + min(content, n - s) + suffix
        labels = np.where(rng.random(size) < 0.5, 0, rng.integers(1, len(LABELS), size))
        ids.append(labels.tolist())
        scores.append(rng.random(size).astype(np.float32).tolist())
    broken = rng.choice(BROKEN) if n and rng.random() < 0.08 else None
    if broken == "no predictions" or status == "rejected":
        ids, scores = [], []  # as the classifier leaves a document it rejected
    elif broken == "short window":
        ids[-1] = ids[-1][: prefix + (n - 1 - wstarts[-1])]
    elif broken == "short scores":
        scores[0] = scores[0][:prefix]
    elif broken == "unknown label":
        ids[0][prefix] = 77
    return {
        C.DOC_ID: f"doc-{k}",
        "keep": k,
        C.I_SOURCE: "part-0.parquet",
        C.I_TEXT: text if n or status != "empty_text" else "",
        C.I_SEGMENTS: names,
        C.I_SEGMENT_STARTS: segment_starts if names else [],
        C.I_STATUS: str(status) if rng.random() > 0.02 else None,
        C.I_REASON: "" if status == "ok" else "upstream",
        C.I_CONTENT_OFFSET: prefix,
        C.I_WINDOW_STARTS: wstarts,
        C.I_TOKEN_START: starts,
        C.I_TOKEN_END: ends,
        C.I_WORD_IDS: word_ids,
        C.I_OWNER: owner,
        C.I_N_TOKENS: n,
        C.I_PRED_IDS: ids,
        C.I_PRED_SCORES: scores,
    }


def random_batch(rng, n_docs):
    """A table of random documents, cut into chunks and sliced as Ray hands batches over."""
    table = pa.Table.from_pylist([random_document(rng, k) for k in range(n_docs)], SCHEMA)
    shape = rng.choice(["chunked", "chunked and sliced", "sliced"])
    if shape == "sliced":
        return table.slice(1, n_docs - 2)
    cuts = sorted(rng.choice(np.arange(1, n_docs), size=min(3, n_docs - 1), replace=False))
    bounds = [0, *map(int, cuts), n_docs]
    chunked = pa.concat_tables([table.slice(a, b - a) for a, b in pairwise(bounds)])
    return chunked.slice(1, n_docs - 2) if shape == "chunked and sliced" else chunked


def assert_same(old: pa.Table, new: pa.Table):
    assert new.schema == old.schema
    for name in old.column_names:
        if name not in (C.ENTITIES, C.I_REASON):
            assert new.column(name).to_pylist() == old.column(name).to_pylist(), name
    for k, (was, now) in enumerate(
        zip(old.column(C.I_REASON).to_pylist(), new.column(C.I_REASON).to_pylist(), strict=True)
    ):
        # The wording of a decode error changed; that it is one did not.
        if was is not None and was.startswith("decode error: "):
            assert now.startswith("decode error: "), (k, was, now)
        else:
            assert now == was, k
    for was, now in zip(
        old.column(C.ENTITIES).to_pylist(), new.column(C.ENTITIES).to_pylist(), strict=True
    ):
        assert [{**e, "score": None} for e in now] == [{**e, "score": None} for e in was]
        assert [e["score"] for e in now] == pytest.approx([e["score"] for e in was], rel=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_decode_matches_the_per_document_decoder(seed):
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, int(rng.integers(3, 40)))
    old, new = OldDecodeStage()(batch), SpanDecodeStage("argmax")(batch)
    assert_same(old, new)
    statuses = new.column(C.STATUS).to_pylist()
    assert statuses.count("ok") + statuses.count("rejected") > 0


def test_the_random_batches_cover_the_cases():
    """What the equivalence test relies on actually occurs in its batches."""
    seen = {"entities": 0, "repairs": 0, "decode errors": 0, "marks": 0, "columns": set()}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        out = OldDecodeStage()(random_batch(rng, int(rng.integers(3, 40))))
        entities = [e for row in out.column(C.ENTITIES).to_pylist() for e in row]
        seen["entities"] += len(entities)
        seen["marks"] += sum(e["text"][-1] in MARKS for e in entities)
        seen["columns"] |= {e["column"] for e in entities}
        seen["repairs"] += sum(out.column("_bio_repairs").to_pylist())
        reasons = out.column(C.I_REASON).to_pylist()
        seen["decode errors"] += sum(r is not None and r.startswith("decode") for r in reasons)
    assert seen["entities"] > 1000 and seen["repairs"] > 100 and seen["marks"] > 10
    assert seen["decode errors"] > 10 and seen["columns"] == {"", "title", "abstract", "body"}


def test_an_empty_batch():
    batch = pa.Table.from_pylist([], SCHEMA)
    assert_same(OldDecodeStage()(batch), SpanDecodeStage("argmax")(batch))


def test_a_token_owned_by_no_window_rejects_the_document():
    """The one deliberate change: the old decoder silently read such a token as ``O``."""
    rng = np.random.default_rng(0)
    row = random_document(rng, 0)
    while not row[C.I_N_TOKENS]:
        row = random_document(rng, 0)
    row.update({C.I_STATUS: "ok", C.I_OWNER: [len(row[C.I_WINDOW_STARTS])] * row[C.I_N_TOKENS]})
    out = SpanDecodeStage("argmax")(pa.Table.from_pylist([row], SCHEMA)).to_pylist()[0]
    assert out[C.STATUS] == "rejected" and "is owned by window" in out[C.I_REASON]

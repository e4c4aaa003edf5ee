import numpy as np
import pyarrow as pa
import pytest

from ner import columns as C
from ner.layout import (
    assign_owners,
    code_points,
    continuation_word_ids,
    owners,
    whitespace_word_ids,
    window_starts,
    window_token_ids,
)
from ner.windowing import TokenizeStage, join_text


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 20, 101])
@pytest.mark.parametrize("content,stride", [(6, 0), (6, 2), (6, 5), (4, 1)])
def test_windows_cover_every_token_and_overlap_by_stride(n, content, stride):
    starts = window_starts(n, content, stride)
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + content, n)))
    assert covered == set(range(n))
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + content - b == stride
    assert starts[-1] + content >= n  # nothing left after the last window
    assert len(starts) == 1 or starts[-2] + content < n  # and no window is superfluous


def test_window_settings_are_checked():
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 4)
    with pytest.raises(ValueError, match="content_length"):
        window_starts(10, 0, 0)


def _edge_distance(t, start, end, n):
    left = t - start if start > 0 else float("inf")
    right = end - 1 - t if end < n else float("inf")
    return min(left, right)


@pytest.mark.parametrize("n,content,stride", [(10, 4, 2), (23, 8, 3), (9, 9, 4), (50, 10, 6)])
def test_each_token_is_owned_by_the_window_where_it_is_furthest_from_a_cut(n, content, stride):
    starts = window_starts(n, content, stride)
    owner = assign_owners(starts, n, content)
    for t in range(n):
        w = owner[t]
        assert starts[w] <= t < starts[w] + content
        mine = _edge_distance(t, starts[w], min(starts[w] + content, n), n)
        for s in starts:
            if s <= t < s + content:
                assert mine >= _edge_distance(t, s, min(s + content, n), n)


def test_owner_hand_example():
    # 10 tokens, windows [0,4) [2,6) [4,8) [6,10): token 2 sits at the right cut of
    # window 0 (distance 1) and at the left cut of window 1 (distance 0).
    assert assign_owners([0, 2, 4, 6], 10, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_join_text_skips_missing_columns():
    assert join_text(["T.", None, "A b"], ["t", "x", "a"], " | ") == (
        "T. | A b",
        ["t", "a"],
        [0, 5],
    )
    assert join_text([None, ""], ["t", "a"], " ") == ("", [], [])


def test_whitespace_words_keep_punctuation_inside_a_chunk():
    text = "IL-2 binds  (p53)."
    starts = [0, 2, 3, 5, 11, 12, 15, 16]
    ends = [2, 3, 4, 10, 12, 15, 16, 17]
    codes, text_offsets = code_points(["x y", text])
    got = whitespace_word_ids(
        codes,
        text_offsets,
        np.array([0, 2, *starts]),
        np.array([1, 3, *ends]),
        np.array([2, len(starts)]),
    )
    assert got.tolist() == [0, 1, 0, 0, 0, 1, 2, 2, 2, 2]  # word ids restart per document


LONG = " ".join(f"word{i} α-synuclein" for i in range(60))


@pytest.fixture(scope="module")
def five_docs():
    return {
        "pmid": [1, 2, 3, None, 5],
        "title": ["TNF-α binds IL-2.", None, "   ", "orphan", "Long one."],
        "abstract": ["It is café\u0301 🧬.", "Only the abstract.", "\n\t", "text", LONG],
        "journal": ["a", "b", "c", "d", "e"],
    }


@pytest.fixture(scope="module")
def stage(tiny_model_dir):
    return TokenizeStage(
        str(tiny_model_dir),
        text_columns=["title", "abstract"],
        id_column="pmid",
        max_length=32,
        stride=8,
        passthrough=["journal"],
    )


def test_tokenize_stage_on_five_rows(stage, five_docs):
    out = stage(five_docs)
    rows = out.to_pylist()
    assert [r[C.DOC_ID] for r in rows] == ["1", "2", "3", None, "5"]
    assert [r[C.I_STATUS] for r in rows] == ["ok", "ok", "empty_text", "rejected", "ok"]
    assert "null pmid" in rows[3][C.I_REASON]
    assert [r["journal"] for r in rows] == five_docs["journal"]
    assert rows[0][C.I_TEXT] == "TNF-α binds IL-2. It is café\u0301 🧬."
    assert rows[1][C.I_SEGMENTS] == ["abstract"] and rows[1][C.I_SEGMENT_STARTS] == [0]
    assert rows[0][C.I_SEGMENT_STARTS] == [0, len("TNF-α binds IL-2. ")]
    assert rows[2][C.I_INPUT_IDS] == [] and rows[3][C.I_INPUT_IDS] == []
    assert len(rows[4][C.I_INPUT_IDS]) > 3  # the long document is windowed, not truncated


def test_windows_hold_every_token_of_the_document(stage, five_docs):
    tokenizer = stage.tokenizer
    out = stage(five_docs).to_pylist()
    for row in out:
        if row[C.I_STATUS] != "ok":
            continue
        full = tokenizer(row[C.I_TEXT], add_special_tokens=False)["input_ids"]
        assert row[C.I_N_TOKENS] == len(full)
        offset = row[C.I_CONTENT_OFFSET]
        rebuilt = []
        for t, w in enumerate(row[C.I_OWNER]):
            window = row[C.I_INPUT_IDS][w]
            assert len(window) <= 32
            assert window[0] == tokenizer.cls_token_id and window[-1] == tokenizer.sep_token_id
            rebuilt.append(window[offset + t - row[C.I_WINDOW_STARTS][w]])
        assert rebuilt == full
        for start, end in zip(row[C.I_TOKEN_START], row[C.I_TOKEN_END], strict=True):
            piece = row[C.I_TEXT][start:end]
            assert piece and not any(ch.isspace() for ch in piece)


def test_bad_text_is_rejected_with_a_reason(tiny_model_dir):
    stage = TokenizeStage(
        str(tiny_model_dir), ["text"], "id", max_length=16, stride=4, max_chars=20
    )
    batch = pa.table(
        {
            "id": ["ok", "long", "bytes", "ctrl", "ws"],
            "text": [b"fine", b"x" * 21, b"\xff\xfe bad", b"\x00\x01", b" \n "],
        }
    )
    rows = stage(batch).to_pylist()
    status = {r[C.DOC_ID]: (r[C.I_STATUS], r[C.I_REASON]) for r in rows}
    assert status["ok"][0] == "ok"
    assert status["long"][0] == "rejected" and "max_chars" in status["long"][1]
    assert status["bytes"][0] == "rejected" and "UTF-8" in status["bytes"][1]
    assert status["ctrl"][0] == "no_tokens"  # visible to Python, nothing to the tokenizer
    assert status["ws"][0] == "empty_text"


def test_missing_column_is_named(stage):
    with pytest.raises(C.MissingColumnError, match="abstract"):
        stage({"pmid": [1], "title": ["x"], "journal": ["j"]})


def test_invalid_utf8_in_a_string_column_rejects_only_that_row(stage):
    # A writer that skips validation can leave a lone surrogate in a Parquet
    # string column; decoding the batch at once would raise for every row.
    raw = pa.array(["p53 \ud800".encode("utf-8", "surrogatepass"), b"MDM2"], pa.binary())
    abstract = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    batch = pa.table(
        {"pmid": ["bad", "good"], "title": ["t", "t"], "abstract": abstract, "journal": ["j"] * 2}
    )
    rows = {r[C.DOC_ID]: r for r in stage(batch).to_pylist()}
    assert rows["bad"][C.I_STATUS] == "rejected" and "UTF-8" in rows["bad"][C.I_REASON]
    assert rows["good"][C.I_STATUS] == "ok"


def test_batch_owners_equal_each_documents_own():
    rng = np.random.default_rng(0)
    for content, stride in [(6, 2), (4, 1), (9, 4), (10, 0), (5, 4)]:
        lengths = rng.integers(0, 40, size=12)
        got = owners(lengths, content, stride)
        want = [assign_owners(window_starts(n, content, stride), n, content) for n in lengths]
        assert got.tolist() == np.concatenate(want).tolist()


def test_window_ids_are_prefix_content_suffix_of_each_window():
    lengths = np.array([0, 3, 11, 1])
    ids = np.arange(100, 100 + lengths.sum(), dtype=np.int32)
    flat, window_offsets, document_windows, starts = window_token_ids(
        ids, lengths, 4, 1, prefix=[1], suffix=[2]
    )
    assert document_windows.tolist() == [0, 0, 1, 5, 6]  # 11 tokens: windows at 0, 3, 6, 9
    windows = [
        flat[a:b].tolist() for a, b in zip(window_offsets[:-1], window_offsets[1:], strict=True)
    ]
    assert windows[0] == [1, 100, 101, 102, 2]
    assert windows[1:5] == [
        [1, 103, 104, 105, 106, 2],
        [1, 106, 107, 108, 109, 2],
        [1, 109, 110, 111, 112, 2],
        [1, 112, 113, 2],
    ]
    assert windows[5] == [1, 114, 2]
    assert starts.tolist() == [0, 0, 3, 6, 9, 0]


def test_word_ids_from_wordpiece_continuations_match_the_tokenizer(stage):
    texts = ["IL-2 binds naïve p53-deficient cells.", "", "Ca2+ and 中文 ##x supercalifragilistic"]
    encodings = stage.backend.encode_batch(texts, add_special_tokens=False)
    ids = np.concatenate([np.array(e.ids, dtype=np.int64) for e in encodings])
    lengths = np.array([len(e.ids) for e in encodings])
    got = continuation_word_ids(stage.is_continuation[ids], lengths)
    want = [w for e in encodings for w in e.word_ids]
    assert got.tolist() == want


def test_stage_tokens_equal_the_hf_tokenizer_with_offsets(stage):
    texts = ["Tumour necrosis factor-α (TNF-α) in p53−/− mice.", "A short one.", "x " * 700]
    table = pa.table(
        {"pmid": [1, 2, 3], "title": [None] * 3, "abstract": texts, "journal": ["j"] * 3}
    )
    out = stage(table)
    for row, text in enumerate(texts):
        want = stage.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert out.column(C.I_TOKEN_START)[row].as_py() == [s for s, _ in want["offset_mapping"]]
        assert out.column(C.I_TOKEN_END)[row].as_py() == [e for _, e in want["offset_mapping"]]
        assert out.column(C.I_WORD_IDS)[row].as_py() == want.word_ids()
        windows = out.column(C.I_INPUT_IDS)[row].as_py()
        starts = out.column(C.I_WINDOW_STARTS)[row].as_py()
        for window, start in zip(windows, starts, strict=True):
            content = window[len(stage.prefix) : len(window) - len(stage.suffix)]
            assert content == want["input_ids"][start : start + len(content)]


def test_a_tie_goes_to_the_earlier_window():
    # windows [0,4) [3,7) [6,10): tokens 3 and 6 sit on a cut in both of their windows
    assert assign_owners([0, 3, 6], 10, 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_word_ids_restart_in_each_document_even_on_a_stray_continuation():
    got = continuation_word_ids(np.array([True, False, True, False]), np.array([1, 0, 3]))
    assert got.tolist() == [0, 0, 0, 1]


def _whitespace_words_one_by_one(text, starts, ends):
    words, word, previous_end = [], -1, None
    for start, end in zip(starts, ends, strict=True):
        if previous_end is None or any(ch.isspace() for ch in text[previous_end:start]):
            word += 1
        words.append(word)
        previous_end = end
    return words


def test_whitespace_word_ids_of_a_batch_equal_one_document_at_a_time(tiny_model_dir):
    stage = TokenizeStage(str(tiny_model_dir), ["text"], word_unit="whitespace")
    texts = ["a long first document, (IL-2)\u3000x" * 20, "b c", "", "p53-null  mice\tdo\n."]
    out = stage(pa.table({"doc_id": list("abcd"), "text": texts}))
    for row, text in enumerate(texts):
        starts = out.column(C.I_TOKEN_START)[row].as_py()
        ends = out.column(C.I_TOKEN_END)[row].as_py()
        got = out.column(C.I_WORD_IDS)[row].as_py()
        assert got == _whitespace_words_one_by_one(text, starts, ends)

"""Fidelity of the annotation job: character-span F1 against token-level seqeval F1.

python -m benchmarks.annotate_fidelity --model DIR [--devel ../shared/data/craft-iob/devel.tsv]
                                       [--word-unit whitespace] [--limit N]
                                       [--decoding viterbi|argmax]

Each devel sentence becomes a document (its tokens joined by single spaces); gold
character spans come from the token positions of its IOB2 mentions. The job
annotates the documents on local Ray; its spans are scored by exact match
(start, end, type). The same model is scored token-level with seqeval as the
training loop does (first sub-token of each CRAFT token), with the same
``--decoding`` on both sides. The two micro F1 figures
should agree within 0.2 points; the script exits 1 when they do not.

``--word-unit whitespace`` (the default here) decodes CRAFT tokens as words, the
unit the model was trained on; ``tokenizer`` shows what punctuation-split words
change.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ner.viterbi import DECODINGS

DEVEL = Path(__file__).resolve().parents[1].parent / "shared/data/craft-iob/devel.tsv"


def sentence_documents(sentences) -> tuple[list[str], list[set[tuple[int, int, str]]]]:
    """Texts (tokens joined by spaces) and gold ``(start, end, type)`` character spans."""
    from ner.labels import mention_spans

    texts, gold = [], []
    for sentence in sentences:
        starts, position = [], 0
        for token in sentence.tokens:
            starts.append(position)
            position += len(token) + 1
        texts.append(" ".join(sentence.tokens))
        gold.append(
            {
                (starts[a], starts[b - 1] + len(sentence.tokens[b - 1]), kind)
                for a, b, kind in mention_spans(sentence.tags)
            }
        )
    return texts, gold


def span_f1(gold: list[set], predicted: list[set]) -> tuple[float, float, float, Counter]:
    """Micro precision, recall, F1 of exact spans; and true positives per type."""
    tp = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
    n_gold = sum(len(g) for g in gold)
    n_pred = sum(len(p) for p in predicted)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_type = Counter(k for g, p in zip(gold, predicted, strict=True) for (_, _, k) in g & p)
    return precision, recall, f1, per_type


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.annotate_fidelity", description=__doc__
    )
    parser.add_argument("--model", required=True, help="trained classifier directory")
    parser.add_argument("--devel", default=str(DEVEL))
    parser.add_argument("--work-dir", default="outputs/fidelity")
    parser.add_argument("--word-unit", default="whitespace", choices=["whitespace", "tokenizer"])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    parser.add_argument("--decoding", default="viterbi", choices=DECODINGS)
    args = parser.parse_args(argv)

    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate
    from ner.model import load_classifier
    from training.craft import read_iob_file
    from training.evaluate import score

    sentences = read_iob_file(args.devel, "devel").sentences
    if args.limit:
        sentences = sentences[: args.limit]
    texts, gold = sentence_documents(sentences)
    work = Path(args.work_dir)
    (work / "in").mkdir(parents=True, exist_ok=True)
    ids = [f"devel-{i:05d}" for i in range(len(texts))]
    pq.write_table(pa.table({"doc_id": ids, "text": texts}), work / "in" / "devel.parquet")

    token_f1 = score(
        load_classifier(args.model),
        [s.tokens for s in sentences],
        [s.tags for s in sentences],
        decoding=args.decoding,
    )["devel_f1"]

    config = AnnotateConfig(
        input=[str(work / "in")],
        output=str(work / "out"),
        model=args.model,
        text_columns=["text"],
        max_length=args.max_length,
        stride=args.stride,
        word_unit=args.word_unit,
        decoding=args.decoding,
        progress_bars=False,
    )
    summary = run_annotate(config)
    print(summary.format())
    out = pq.read_table(work / "out", columns=["doc_id", "entities"]).to_pylist()
    by_id = {
        row["doc_id"]: {(e["start"], e["end"], e["label"]) for e in row["entities"]} for row in out
    }
    predicted = [by_id.get(i, set()) for i in ids]
    precision, recall, char_f1, _ = span_f1(gold, predicted)

    difference = abs(char_f1 - token_f1) * 100
    print(f"sentences {len(sentences):,}; gold mentions {sum(len(g) for g in gold):,}")
    print(f"token-level seqeval F1 (training's evaluation): {token_f1 * 100:.2f}")
    print(
        f"character-span F1 (annotate job, word_unit={args.word_unit}): {char_f1 * 100:.2f} "
        f"(P {precision * 100:.2f}, R {recall * 100:.2f})"
    )
    ok = difference <= 0.2
    print(f"difference {difference:.2f} points: {'OK' if ok else 'FAIL'} (target <= 0.2)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Speed of argmax span decoding (``ner.decode``), per document sub-token.

python -m benchmarks.decode_speed [--tokens 1000000] [--batch-docs 64] [--repeat 5]

The batch is real: the 500 sample abstracts (title and abstract) through
``TokenizeStage`` with the embedded tokenizer (512-token windows, stride 128),
replicated to about ``--tokens`` document sub-tokens. Predictions are synthetic,
with the windows' shapes: mentions of 1-4 tokens of a random type cover about 10%
of the tokens, each window repeats them at its positions (special tokens are
``O``), and the scores are uniform in [0.5, 1). The decoder runs on batches of
``--batch-docs`` documents (the job's classify batch size is 64) and on the whole
table as one batch, in one process; the figures are microseconds per document
sub-token (no special tokens, no window overlap), wall-clock and CPU time, each the
best of ``--repeat`` runs. (The per-document decoder it replaced, and its figures,
are in ``tests/decode_oracle.py`` and ``benchmarks/results/history.md``.)"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

PUBTATOR = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
)


def tokenized_abstracts(path: Path = PUBTATOR) -> pa.Table:
    from corpora.pubtator import read_pubtator
    from ner.model import EMBEDDED
    from ner.windowing import TokenizeStage

    documents = read_pubtator(path)
    stage = TokenizeStage(model=EMBEDDED, text_columns=["title", "abstract"], id_column="pmid")
    return stage(pa.Table.from_pylist(documents))


def with_predictions(table: pa.Table, seed: int = 0, entity_share: float = 0.1) -> pa.Table:
    """Add ``_pred_ids`` and ``_pred_scores`` shaped like ``_input_ids``, mostly ``O``."""
    from ner import columns as C
    from ner.labels import ENTITY_TYPES, LABEL2ID

    rng = np.random.default_rng(seed)
    mean_length = 2.5
    ids, scores = [], []
    for windows, starts, offset, n in zip(
        table.column(C.I_INPUT_IDS).to_pylist(),
        table.column(C.I_WINDOW_STARTS).to_pylist(),
        table.column(C.I_CONTENT_OFFSET).to_pylist(),
        table.column(C.I_N_TOKENS).to_pylist(),
        strict=True,
    ):
        truth = np.zeros(n, dtype=np.int16)
        t = 0
        while t < n:
            if rng.random() < entity_share / mean_length:
                kind = ENTITY_TYPES[rng.integers(len(ENTITY_TYPES))]
                length = int(rng.integers(1, 5))
                truth[t] = LABEL2ID[f"B-{kind}"]
                truth[t + 1 : t + length] = LABEL2ID[f"I-{kind}"]
                t += length
            else:
                t += 1
        doc_ids, doc_scores = [], []
        for window, start in zip(windows, starts, strict=True):
            labels = np.zeros(len(window), dtype=np.int16)
            content = truth[start : start + len(window) - offset - 1]  # [CLS] content [SEP]
            labels[offset : offset + len(content)] = content
            doc_ids.append(labels)
            doc_scores.append(rng.uniform(0.5, 1.0, len(window)).astype(np.float32))
        ids.append(doc_ids)
        scores.append(doc_scores)
    table = table.append_column(C.I_PRED_IDS, pa.array(ids, pa.list_(pa.list_(pa.int16()))))
    return table.append_column(C.I_PRED_SCORES, pa.array(scores, pa.list_(pa.list_(pa.float32()))))


def replicated(table: pa.Table, tokens: int) -> pa.Table:
    from ner import columns as C

    per_copy = sum(table.column(C.I_N_TOKENS).to_pylist())
    copies = max(1, round(tokens / per_copy))
    return pa.concat_tables([table] * copies).combine_chunks()


def best_time(decode, batches: list[pa.Table], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of this process to decode all ``batches``.

    CPU time is the steadier figure on a shared machine: waiting for a core is not in it.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            decode(batch)
        wall = min(wall, time.perf_counter() - began)
        cpu = min(cpu, time.process_time() - began_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    from ner import columns as C
    from ner.decode import SpanDecodeStage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="about this many sub-tokens")
    parser.add_argument("--batch-docs", type=int, default=64, help="documents per decode call")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each timing; best counts")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    table = replicated(with_predictions(tokenized_abstracts()), args.tokens)
    n_tokens = sum(table.column(C.I_N_TOKENS).to_pylist())
    batches = [
        table.slice(start, args.batch_docs) for start in range(0, table.num_rows, args.batch_docs)
    ]
    print(
        f"{table.num_rows:,} documents, {n_tokens:,} sub-tokens, {len(batches)} batches of "
        f"{args.batch_docs} documents (prepared in {time.perf_counter() - began:.1f} s)"
    )
    # The predictions are labels and scores, no log-probabilities: argmax decoding
    # (``benchmarks.viterbi_cost`` measures what Viterbi adds).
    decode = SpanDecodeStage(decoding="argmax")
    entities = sum(len(row) for row in decode(table).column(C.ENTITIES).to_pylist())
    print(f"{entities:,} entities ({entities / n_tokens:.3f} per sub-token)")

    timings = {
        f"batches of {args.batch_docs} documents": best_time(decode, batches, args.repeat),
        "the whole table as one batch": best_time(decode, [table], args.repeat),
    }
    per = 1e6 / n_tokens
    print(f"{'µs per sub-token':38s} {'wall':>8s} {'CPU':>8s}")
    for name, (wall, cpu) in timings.items():
        print(f"{name:38s} {wall * per:8.3f} {cpu * per:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

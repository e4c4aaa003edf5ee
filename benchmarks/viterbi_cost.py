"""What valid-BIO (Viterbi) decoding adds to the host cost per sub-token, against argmax.

python -m benchmarks.viterbi_cost [--copies 4] [--repeat 3]

The two decodings differ in two stages, both measured here in one process on the
same tokenized batches (64 documents each, as ``configs/annotate_cpu.yaml`` sends
them), CPU-seconds with ``time.process_time``:

* the classifier stage: with ``decoding: viterbi`` it also returns every label's
  log-probability (fp16), 26 more bytes a token to scatter and wrap in Arrow. Its
  host share is the stage's CPU time less the time inside ``_forward`` (the model,
  softmax and the fp16 log-probabilities: device work on a GPU node, and the same
  on both sides but for that conversion), so CPU noise in the forward pass does not
  swamp the difference;
* the decode stage: Viterbi re-decodes the text columns whose argmax is invalid.

The model is the 2 x 32 test BERT of ``benchmarks.host_cost``, biased to "mostly O"
or to a realistic entity share. Its head is random, so at the realistic share most
of its argmax sequences are invalid and nearly every text column is re-decoded: an
upper bound for a trained model, which breaks BIO about once per abstract. The
issue's budget is 0.5 µs per sub-token per core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.host_cost import DENSITIES, biased_model


def _batches(model: Path, copies: int):
    import pyarrow as pa

    from benchmarks.gpu_suite import sample_documents
    from ner.windowing import TokenizeStage

    docs = sample_documents() * copies
    table = pa.table(
        {
            "pmid": [f"{d['pmid']}-{i}" for i, d in enumerate(docs)],
            "title": [d["title"] for d in docs],
            "abstract": [d["abstract"] for d in docs],
        }
    )
    tokenize = TokenizeStage(str(model), ["title", "abstract"], "pmid", 256, 64)
    return [tokenize(table.slice(start, 64)) for start in range(0, len(table), 64)]


def _run(model: Path, batches, decoding: str) -> tuple[float, float, int]:
    """CPU-seconds of the classifier's host work and of decoding, and the sub-tokens."""
    from ner import columns as C
    from ner.decode import SpanDecodeStage
    from ner.inference import TokenClassifierStage

    class Timed(TokenClassifierStage):
        forward_s = 0.0

        def _forward(self, ids, lengths):
            started = time.process_time()
            try:
                return super()._forward(ids, lengths)
            finally:
                Timed.forward_s += time.process_time() - started

    classify = Timed(
        str(model), token_budget=4096, device="cpu", num_threads=1, log_probs=decoding == "viterbi"
    )
    decode = SpanDecodeStage(decoding)
    classify_s = decode_s = 0.0
    tokens = 0
    for batch in batches:
        started = time.process_time()
        predicted = classify(batch)
        middle = time.process_time()
        decode(predicted)
        classify_s += middle - started
        decode_s += time.process_time() - middle
        tokens += sum(batch.column(C.I_N_TOKENS).to_pylist())
    return classify_s - Timed.forward_s, decode_s, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.viterbi_cost", description=__doc__)
    parser.add_argument("--copies", type=int, default=4, help="the 500 sample abstracts x N")
    parser.add_argument("--repeat", type=int, default=3, help="runs per peer; the lowest counts")
    parser.add_argument("--out", default="outputs/viterbi-cost")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print("| density | peer | classifier host µs/token | decode µs/token | sub-tokens |")
    print("|---|---|---:|---:|---:|")
    for density, share in DENSITIES.items():
        model = biased_model(Path(args.out) / f"model-{share}", share)
        batches = _batches(model, args.copies)
        best = {}
        for _ in range(args.repeat):  # interleaved, so drift hits both peers alike
            for decoding in ("argmax", "viterbi"):
                classify_s, decode_s, tokens = _run(model, batches, decoding)
                old = best.get(decoding, (float("inf"), float("inf"), tokens))
                best[decoding] = (min(old[0], classify_s), min(old[1], decode_s), tokens)
        for decoding, (classify_s, decode_s, tokens) in best.items():
            print(
                f"| {density} | {decoding} | {classify_s / tokens * 1e6:.3f} "
                f"| {decode_s / tokens * 1e6:.3f} | {tokens:,} |"
            )
        (a_c, a_d, tokens), (v_c, v_d, _) = best["argmax"], best["viterbi"]
        added = (v_c + v_d - a_c - a_d) / tokens * 1e6
        print(
            f"| {density} | **viterbi - argmax** | {(v_c - a_c) / tokens * 1e6:+.3f} "
            f"| {(v_d - a_d) / tokens * 1e6:+.3f} | added {added:+.3f} µs/token |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

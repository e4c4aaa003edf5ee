"""Throughput of the annotation job against two baselines, on the same model and documents.

python -m benchmarks.annotate_throughput [--model DIR] [--copies 10] [--skip a,b,c,c10]
python -m benchmarks.annotate_throughput --make-model outputs/untrained-minilm  # ner.model.make_untrained_model

(a) transformers ``pipeline("token-classification", aggregation_strategy="simple")``,
    one document at a time; (b) bare PyTorch forward passes over pre-tokenised,
    globally length-sorted windows: no I/O, no Ray, no decoding; (c) our job end to
    end on Ray Data (read Parquet, tokenize, classify, decode, write), on the 500
    sample abstracts and on a ``--copies`` times larger copy. Tokens are the
    documents' sub-tokens (no special tokens, no window overlap), the same count
    for all three. Peak memory of this process and its children (Ray's workers
    included), sampled every 100 ms, two ways: summed RSS, which counts a shared
    page (Ray's object store, shared libraries) once per process that maps it, and
    summed PSS, which splits each shared page among its processes and so adds up to
    the memory the tree really holds.

Without ``--model``, the embedded MiniLM with a random head is used: throughput
does not depend on the head's weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.process_sampling import PeakMemory

DEFAULT_MODEL = "outputs/untrained-minilm"
PUBTATOR = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
)


def documents(pubtator: Path) -> list[str]:
    from corpora.pubtator import read_pubtator

    return [d["title"] + " " + d["abstract"] for d in read_pubtator(pubtator)]


def count_tokens(model: str, texts: list[str]) -> int:
    from ner.model import load_tokenizer

    tokenizer = load_tokenizer(model)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)
    return sum(len(ids) for ids in encoded["input_ids"])


def bench_pipeline(model: str, texts: list[str], max_length: int, stride: int) -> float:
    """(a) seconds for the transformers pipeline over all texts."""
    from transformers import AutoModelForTokenClassification, pipeline

    from ner.model import load_tokenizer

    tokenizer = load_tokenizer(model)
    tokenizer.model_max_length = max_length
    classifier = pipeline(
        "token-classification",
        model=AutoModelForTokenClassification.from_pretrained(model),
        tokenizer=tokenizer,
        aggregation_strategy="simple",
        stride=stride,
        device="cpu",
    )
    started = time.perf_counter()
    for text in texts:
        classifier(text)
    return time.perf_counter() - started


def bench_bare(
    model: str, texts: list[str], max_length: int, stride: int, token_budget: int
) -> float:
    """(b) seconds for forward passes alone over length-sorted windows packed to the budget."""
    import numpy as np
    import torch

    from ner import columns as C
    from ner.inference import TokenClassifierStage, predict
    from ner.packing import gather_padded, pack_windows, windows_from_arrow
    from ner.windowing import TokenizeStage

    stage = TokenizeStage(model, ["text"], "id", max_length=max_length, stride=stride)
    table = stage({"id": [str(i) for i in range(len(texts))], "text": texts})
    windows = windows_from_arrow(table.column(C.I_INPUT_IDS))
    classifier = TokenClassifierStage(model, token_budget=token_budget, device="cpu")
    batches = []
    for batch in pack_windows(windows.lengths, token_budget):
        lengths = windows.lengths[batch]
        ids = np.empty((len(batch), lengths[0]), dtype=np.int32)
        gather_padded(windows.tokens, windows.starts[batch], lengths, ids, classifier.pad_id)
        batches.append((torch.from_numpy(ids), torch.from_numpy(lengths)))
    started = time.perf_counter()
    with torch.inference_mode():
        for ids, lengths in batches:
            predict(classifier.model, ids, lengths, classifier.to_canonical)
    return time.perf_counter() - started


def bench_job(
    model: str, input_dir: Path, output: Path, max_length: int, stride: int, token_budget: int
):
    """(c) the job's summary (its wall time includes validation, not Ray start-up)."""
    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate
    from plumbing.config import load_config

    config = load_config(
        AnnotateConfig,
        "configs/annotate_cpu.yaml",
        [
            f"input={input_dir}",
            f"output={output}",
            f"model={model}",
            f"max_length={max_length}",
            f"stride={stride}",
            f"token_budget={token_budget}",
            "progress_bars=false",
        ],
    )
    return run_annotate(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.annotate_throughput", description=__doc__
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"classifier directory (default {DEFAULT_MODEL}, made if missing)",
    )
    parser.add_argument(
        "--make-model", metavar="DIR", help="only write the untrained MiniLM classifier to DIR"
    )
    parser.add_argument("--pubtator", default=str(PUBTATOR))
    parser.add_argument("--work-dir", default="outputs/bench-annotate")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument(
        "--token-budget",
        type=int,
        default=4096,
        help="padded sub-tokens per forward pass (b and c)",
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,c10")
    args = parser.parse_args(argv)
    from ner.model import make_untrained_model

    if args.make_model:
        print(f"wrote {make_untrained_model(args.make_model)}")
        return 0
    skip = set(filter(None, args.skip.split(",")))
    model = args.model or DEFAULT_MODEL
    if args.model is None and not Path(model, "config.json").is_file():
        make_untrained_model(model)

    import torch

    from corpora.pubtator import read_pubtator, write_parquet

    work = Path(args.work_dir)
    docs = read_pubtator(args.pubtator)
    write_parquet(docs, work / "in-1x", files=4)
    texts = documents(Path(args.pubtator))
    tokens = count_tokens(model, texts)
    print(
        f"model {model}; {len(texts)} documents, {tokens:,} tokens; torch threads {torch.get_num_threads()}"
    )
    results: dict[str, tuple[float, int, int]] = {}

    if "a" not in skip:
        with PeakMemory() as peak:
            seconds = bench_pipeline(model, texts, args.max_length, args.stride)
        results["a"] = (seconds, peak.peak_rss, peak.peak_pss)
    if "b" not in skip:
        with PeakMemory() as peak:
            seconds = bench_bare(model, texts, args.max_length, args.stride, args.token_budget)
        results["b"] = (seconds, peak.peak_rss, peak.peak_pss)
    if "c" in skip and "c10" in skip:
        pass
    else:
        import ray

        ray.init(num_cpus=None, include_dashboard=False, logging_level="warning")
        if "c" not in skip:
            with PeakMemory() as peak:
                summary = bench_job(
                    model,
                    work / "in-1x",
                    work / "out-1x",
                    args.max_length,
                    args.stride,
                    args.token_budget,
                )
            assert summary.balanced and summary.tokens == tokens, (summary.tokens, tokens)
            results["c"] = (summary.pipeline_s, peak.peak_rss, peak.peak_pss)
            print(summary.format())
        if "c10" not in skip:
            write_parquet(
                docs, work / f"in-{args.copies}x", files=4 * args.copies, copies=args.copies
            )
            with PeakMemory() as peak:
                summary = bench_job(
                    model,
                    work / f"in-{args.copies}x",
                    work / f"out-{args.copies}x",
                    args.max_length,
                    args.stride,
                    args.token_budget,
                )
            assert summary.balanced
            results["c10"] = (summary.pipeline_s, peak.peak_rss, peak.peak_pss)
            print(summary.format())
        ray.shutdown()

    print("\npart  seconds  tokens/s  peak RSS (MiB)  peak PSS (MiB)")
    for part, (seconds, rss, pss) in results.items():
        n = tokens * (args.copies if part == "c10" else 1)
        print(
            f"{part:<5} {seconds:8.1f} {n / seconds:9,.0f} {rss / 2**20:15,.0f} {pss / 2**20:15,.0f}"
        )
    if "c" in results and "b" in results:
        print(f"c/b (tokens/s) = {results['b'][0] / results['c'][0]:.2f}   target >= 0.8")
    if "c" in results and "a" in results:
        print(f"c/a (tokens/s) = {results['a'][0] / results['c'][0]:.2f}   target >= 3")
    if "c" in results and "c10" in results:
        print(
            f"{args.copies}x documents: {results['c10'][0] / results['c'][0]:.2f}x time (target <= 10.5x), "
            f"{results['c10'][2] / results['c'][2]:.2f}x peak PSS (target <= 1.2x; "
            f"summed RSS {results['c10'][1] / results['c'][1]:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

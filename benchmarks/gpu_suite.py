"""The prepared GPU measurement: annotation and training, side by side on one device.

    python -m benchmarks.gpu_suite --out DIR                 # a lent H100/H200: at most 8 minutes
    python -m benchmarks.gpu_suite --tiny --out DIR          # CPU, tiny model: the suite's own test

Annotation peers, all on the same model, documents and device:
  (a) ``transformers.pipeline("token-classification")`` in bf16, at its best batch_size;
  (b) the bare bf16 forward pass over pre-tokenised windows packed to a token budget,
      every batch already on the device: the ceiling a pipeline can approach;
  (c) ``jobs.annotate`` end to end on Ray Data (read, tokenize, classify, decode, write)
      over the sample abstracts replicated with distinct ids to ``--tokens`` sub-tokens.
For each: tokens/s, docs/s, MFU against the device's dense bf16 peak, GPU busy %
(NVML, sampled every 100 ms) and the GPU-hours projected for PubMed's 36 M abstracts.

Training: ms per optimizer step after warm-up and fixed costs, for our job and for the
HF Trainer at the same batch and precision, one run of ``--train-steps`` steps each.

The model is built here with random weights in BERT-base's shape (BioBERT's), since
the device machine has no network; throughput does not depend on the weights.
Writes ``gpu_suite.json`` and ``gpu_suite.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.process_sampling import GpuBusy

ROOT = Path(__file__).resolve().parents[1]
PUBTATOR = ROOT.parent / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
PUBMED_ABSTRACTS = 36_000_000
# Dense bf16 tensor-core peaks (no sparsity), from NVIDIA's H100/H200 SXM data sheets.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
BERT_BASE = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
)


def build_model(directory: Path, tiny: bool) -> Path:
    """A token classifier with random weights: BERT-base's shape, or the tiny test BERT.

    A directory with a config and tokenizer but no weights (what gpu_prepare.sh carries)
    gets random weights drawn here, from that config.
    """
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    from ner.model import save_tiny_model

    if (directory / "model.safetensors").is_file():
        return directory
    if (directory / "config.json").is_file():
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(directory))
        model.save_pretrained(directory)
        return directory
    return save_tiny_model(directory, **({} if tiny else BERT_BASE))


def sample_documents() -> list[dict]:
    from corpora.pubtator import read_pubtator

    return read_pubtator(PUBTATOR)


def build_corpus(directory: Path, docs: list[dict], copies: int, per_file: int = 5000) -> int:
    """The sample replicated ``copies`` times with distinct ids, as Parquet; returns rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if directory.is_dir() and any(directory.glob("*.parquet")):
        return pq.ParquetDataset(directory).read(columns=["pmid"]).num_rows
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {"pmid": f"{d['pmid']}-{c}", "title": d["title"], "abstract": d["abstract"]}
        for c in range(copies)
        for d in docs
    ]
    for start in range(0, len(rows), per_file):
        part = pa.Table.from_pylist(rows[start : start + per_file])
        pq.write_table(part, directory / f"part-{start // per_file:05d}.parquet")
    return len(rows)


def forward_flops_per_token(config, mean_length: float) -> float:
    """Dense matmul FLOPs of one token's forward pass: 2 x weights + attention's 4 x L x s x d."""
    d, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * d * d + 2 * d * config.intermediate_size)
    return 2 * weights + 4 * layers * mean_length * d


def rates(tokens: int, docs: int, seconds: float, flops_per_token: float, peak: float | None):
    tokens_s, docs_s = tokens / seconds, docs / seconds
    return {
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "docs": docs,
        "tokens_per_s": round(tokens_s),
        "docs_per_s": round(docs_s, 1),
        "mfu": round(tokens_s * flops_per_token / (peak * 1e12), 4) if peak else None,
        "pubmed_gpu_hours": round(PUBMED_ABSTRACTS / docs_s / 3600, 2),
    }


def bench_pipeline(
    model: str, texts: list[str], device: str, budget_s: float, batch_sizes=(8, 32, 128)
) -> dict:
    """(a) the transformers pipeline at its best of a few batch sizes."""
    import torch
    from transformers import pipeline

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    classifier = pipeline(
        "token-classification", model=model, device=device, dtype=dtype,
        aggregation_strategy="simple", stride=64,
    )  # fmt: skip
    classifier.tokenizer.model_max_length = 512
    probe = texts[: min(len(texts), 4 * max(batch_sizes))]
    best = (0.0, 1)
    for batch_size in batch_sizes:
        started = time.perf_counter()
        classifier(probe, batch_size=batch_size)
        best = max(best, (len(probe) / (time.perf_counter() - started), batch_size))
    docs_s, batch_size = best
    count = max(1, min(len(texts), int(docs_s * budget_s)))
    with GpuBusy() as busy:
        started = time.perf_counter()
        classifier(texts[:count], batch_size=batch_size)
        seconds = time.perf_counter() - started
    return {"batch_size": batch_size, "docs": count, "seconds": seconds, "busy": busy.percent}


def window_ids(model: str, texts: list[str], max_length: int = 512) -> list[list[int]]:
    """Every document's sub-tokens cut into windows of ``max_length`` with [CLS]/[SEP]."""
    from ner.model import load_tokenizer

    tokenizer = load_tokenizer(model)
    body = max_length - 2
    out = []
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), body):
            out.append([tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id])
    return out


def bench_bare(
    model: str, windows: list[list[int]], device: str, token_budget: int, log_probs: bool = False
) -> dict:
    """(b) the forward-pass ceiling: bf16 passes over windows packed to ``token_budget``.

    Every batch is packed and padded as the job's classifier stage does on CUDA
    (:func:`ner.packing.pack_windows` and :func:`ner.packing.batch_shape`) and moved
    to the device before the clock starts, and one untimed pass goes over every
    batch first, so each shape's one-off cuDNN/cuBLAS planning is done: the timed
    pass is the device's steady work alone (the forward pass plus the softmax, max
    and label lookup the job also runs there), with one sync at the end. Without
    that pass, on an H200, the same batches ran at 0.41x the rate. ``cpu_seconds`` is
    the process's CPU time over the timed pass alone; ``log_probs`` also returns every
    label's log-probability, as the job does for Viterbi decoding.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification

    from ner.inference import predict
    from ner.model import pad_token_id
    from ner.packing import CUDA_SHAPE_MULTIPLES, batch_shape, fill_batch, pack_windows

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    width_multiple, row_multiple = CUDA_SHAPE_MULTIPLES if device == "cuda" else (1, 1)
    net = AutoModelForTokenClassification.from_pretrained(model, dtype=dtype).to(device).eval()
    lengths = np.array([len(w) for w in windows], dtype=np.int64)
    tokens = np.fromiter((t for w in windows for t in w), dtype=np.int32, count=lengths.sum())
    starts = np.cumsum(lengths) - lengths
    to_canonical = torch.arange(net.config.num_labels, dtype=torch.int8, device=device)
    batches = []
    for batch in pack_windows(lengths, token_budget, width_multiple):
        shape = batch_shape(int(lengths[batch[0]]), len(batch), token_budget, width_multiple,
                            row_multiple)  # fmt: skip
        ids, rows = np.empty(shape, dtype=np.int32), np.empty(shape[0], dtype=np.int32)
        fill_batch(tokens, starts[batch], lengths[batch], ids, rows, pad_token_id(net))
        batches.append((torch.from_numpy(ids).to(device), torch.from_numpy(rows).to(device)))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        for ids, rows in batches:  # warm-up: every shape once
            predict(net, ids, rows, to_canonical, log_probs, ordered=True)
        sync()
        with GpuBusy() as busy:
            started, cpu = time.perf_counter(), time.process_time()
            for ids, rows in batches:
                predict(net, ids, rows, to_canonical, log_probs, ordered=True)
            sync()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"batches": len(batches), "seconds": seconds, "cpu_seconds": cpu, "busy": busy.percent}


def bench_job(model: str, corpus: Path, output: Path, config: str, extra=()) -> dict:
    """(c) ``jobs.annotate`` as a user runs it; the figures come from its run manifest."""
    command = [sys.executable, "-m", "jobs.annotate", "--config", config, f"input={corpus}",
               f"output={output}", f"model={model}", "progress_bars=false", *extra]  # fmt: skip
    with GpuBusy() as busy:
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"jobs.annotate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((output / "_manifest.json").read_text())["summary"]
    return {"summary": summary, "wall": wall, "busy": busy.percent}


def bench_training(model: str, config: str, steps: int, tiny: bool) -> dict:
    """Each peer's ms per optimizer step once warm, and its fixed seconds, for ``steps`` steps.

    Both peers time their steps after the same warm-up with a device sync at each end
    (our loop's ``steady_step_ms``, the HF baseline's callback); fixed seconds are the
    rest of the peer's wall time: start-up, data, evaluation, checkpoint and export.
    """
    from benchmarks.train_vs_hf_trainer import run_peers

    overrides = [f"base_model={model}", "epochs=1", "max_eval_sentences=200", "num_to_keep=1",
                 f"max_steps_per_epoch={steps}"]  # fmt: skip
    if tiny:
        overrides += ["use_gpu=false", "max_train_sentences=400"]
    else:  # one worker per GPU here: the HF Trainer peer uses one device too
        overrides.append("num_workers=1")
    peers = run_peers(config, overrides)
    out = {}
    for name, peer in peers.items():
        ms = peer["steady_step_ms"]
        out[name] = {
            "ms_per_step": round(ms, 1),
            "fixed_s": round(peer["wall_s"] - steps * ms / 1000, 1),
            "wall_s": round(peer["wall_s"], 1),
            "devel_f1": round(peer["devel_f1"], 4),
        }
    out["ratio"] = round(out["ours"]["ms_per_step"] / out["hf"]["ms_per_step"], 3)
    return out


def markdown(result: dict) -> str:
    lines = [f"GPU suite, {result['device']}, {result['date']}; peak {result['peak_tflops']} TFLOP/s "
             "dense bf16", "", "| peer | tokens/s | docs/s | MFU | GPU busy % | PubMed GPU-hours |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, part in result["annotation"].items():
        busy = "-" if part.get("busy") is None else f"{part['busy']:.0f}"
        mfu = "-" if part["mfu"] is None else f"{100 * part['mfu']:.1f}%"
        lines.append(f"| {name} | {part['tokens_per_s']:,} | {part['docs_per_s']:,} | {mfu} | "
                     f"{busy} | {part['pubmed_gpu_hours']:,} |")  # fmt: skip
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items())]
    if "training" in result:
        t = result["training"]
        lines += ["", "| training | ms/step | fixed s |", "|---|---:|---:|"]
        lines += [f"| {p} | {t[p]['ms_per_step']} | {t[p]['fixed_s']} |" for p in ("hf", "ours")]
        lines += ["", f"ours / HF ms per step: {t['ratio']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default="outputs/gpu-suite")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU, small corpus")
    parser.add_argument("--tokens", type=float, default=10e6, help="sub-tokens in (c)'s corpus")
    parser.add_argument("--parts", default="a,b,c,train")
    parser.add_argument("--token-budget", type=int, default=65536, help="tokens per batch in (b)")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--model", help="model directory (default: built under --out)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars per peer
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    peak = (
        next((v for k, v in PEAK_TFLOPS.items() if k in name), None) if device == "cuda" else None
    )
    model = str(build_model(Path(args.model or out / "model"), args.tiny).resolve())
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    docs = sample_documents()
    texts = [d["title"] + " " + d["abstract"] for d in docs]
    windows = window_ids(model, texts)
    sample_tokens = sum(len(w) - 2 for w in windows)
    mean_length = sum(len(w) for w in windows) / len(windows)
    flops = forward_flops_per_token(config, mean_length)
    tokens_per_doc = sample_tokens / len(docs)
    result = {"device": name, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "model": dict(
        layers=config.num_hidden_layers, hidden=config.hidden_size), "peak_tflops": peak,
        "tokens_per_doc": round(tokens_per_doc, 1), "annotation": {}, "ratios": {}}  # fmt: skip
    annotation = result["annotation"]

    def save() -> None:  # after each part, so a run cut off at its limit keeps what it measured
        (out / "gpu_suite.json").write_text(json.dumps(result, indent=2))

    print(f"gpu_suite: {name}, model {config.num_hidden_layers}x{config.hidden_size}, "
          f"{tokens_per_doc:.0f} sub-tokens per abstract", flush=True)  # fmt: skip
    if "a" in parts:
        sizes = (8, 16) if args.tiny else (8, 32, 128)
        a = bench_pipeline(model, texts * 4, device, 3 if args.tiny else 45, sizes)
        annotation["a_pipeline"] = rates(
            round(a["docs"] * tokens_per_doc), a["docs"], a["seconds"], flops, peak
        )
        annotation["a_pipeline"].update(busy=a["busy"], batch_size=a["batch_size"])
        print(f"(a) pipeline: {annotation['a_pipeline']}", flush=True)
        save()
    if "b" in parts:
        reps = 1 if args.tiny else max(1, round(2e6 / sample_tokens))
        b = bench_bare(model, windows * reps, device, args.token_budget)
        annotation["b_forward"] = rates(
            sample_tokens * reps, len(docs) * reps, b["seconds"], flops, peak
        )
        annotation["b_forward"]["busy"] = b["busy"]
        print(f"(b) bare forward: {annotation['b_forward']}", flush=True)
        save()
    if "c" in parts:
        copies = 1 if args.tiny else max(1, math.ceil(args.tokens / sample_tokens))
        corpus = out / f"corpus-{copies}x"
        rows = build_corpus(corpus, docs, copies)
        job_config = "configs/annotate_cpu.yaml" if args.tiny else "configs/annotate_gpu.yaml"
        # --tiny only checks that the suite runs: no dashboard, for a faster start.
        extra = ["dashboard=false"] if args.tiny else []
        c = bench_job(model, corpus, out / "annotations", job_config, extra)
        summary = c["summary"]
        annotation["c_job"] = rates(summary["tokens"], rows, c["wall"], flops, peak)
        annotation["c_job"].update(busy=c["busy"], pipeline_s=round(summary["pipeline_s"], 2))
        print(f"(c) jobs.annotate: {annotation['c_job']}", flush=True)
        save()
    tps = {k[0]: v["tokens_per_s"] for k, v in annotation.items()}
    for num, den in (("c", "b"), ("c", "a"), ("b", "a")):
        if num in tps and den in tps:
            result["ratios"][f"{num}/{den}"] = round(tps[num] / tps[den], 3)
    if "train" in parts:
        train_config = "configs/train_smoke.yaml" if args.tiny else "configs/train_biobert_gpu.yaml"
        steps = 12 if args.tiny else args.train_steps
        result["training"] = bench_training(model, train_config, steps, args.tiny)
        print(f"training: {result['training']}", flush=True)
    save()
    (out / "gpu_suite.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Host cost per sub-token of the annotation job: everything but the forward pass.

python -m benchmarks.host_cost [--tokens 10e6] [--baseline-tree DIR] [--out outputs/host-cost]

Runs ``jobs.annotate`` as a user does (``configs/annotate_cpu.yaml``, a new local
Ray cluster on this machine's cores) with a 2-layer, 32-wide BERT, whose forward
pass costs next to nothing: what the job spends is host work (read, tokenize,
window, the classifier actor's own work around the model, decode, write) and
Ray's. A GPU node has about 15 cores to feed one GPU; at 50% of an H100's bf16
peak BERT-base takes 2.75 M tokens/s, so the host may spend at most about 5 µs
per token per core.

Two label densities: the head's bias on ``O`` is set so that the model predicts
an entity for almost no token ("mostly O") or for about one token in ten
("realistic", CRAFT's density), since decoding costs grow with entities.

CPU-seconds are those of the whole process tree (the driver, Ray's daemons and
workers), sampled every 0.2 s. End to end: the run's CPU-seconds over its tokens,
start-up included. Steady state: the difference between a full and a half corpus
over the difference in tokens, so start-up cancels out. ``--baseline-tree`` runs
the same from another checkout (a git worktree of an older commit) as a peer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.gpu_suite import build_corpus, sample_documents

ROOT = Path(__file__).resolve().parents[1]
DENSITIES = {"mostly O": 0.002, "realistic": 0.1}


class TreeCpu:
    """CPU-seconds (user + system) of a process and all its descendants, polled."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid)
        self.seen: dict[tuple[int, float], float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                self.seen[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:
                continue  # ended between listing and reading: its last poll counts

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def biased_model(directory: Path, entity_share: float) -> Path:
    """The 2 x 32 test BERT with its ``O`` bias set so that about ``entity_share`` of tokens are entities."""
    import torch

    from ner.labels import LABEL2ID, OUTSIDE
    from ner.model import load_tokenizer, save_tiny_model, tiny_bert

    if (directory / "model.safetensors").is_file():
        return directory
    model = tiny_bert(0)
    tokenizer = load_tokenizer(save_tiny_model(directory))
    texts = [d["title"] + " " + d["abstract"] for d in sample_documents()[:100]]
    batch = tokenizer(texts, truncation=True, max_length=256, padding=True, return_tensors="pt")
    outside = model.config.label2id.get(OUTSIDE, LABEL2ID[OUTSIDE])
    with torch.no_grad():
        logits = model(**batch).logits
        mask = batch["attention_mask"].bool()
        low, high = -20.0, 40.0  # bisect the bias that gives the wanted share
        for _ in range(40):
            bias = (low + high) / 2
            shifted = logits.clone()
            shifted[..., outside] += bias
            share = (shifted.argmax(-1) != outside)[mask].float().mean().item()
            low, high = (bias, high) if share > entity_share else (low, bias)
        model.classifier.bias[outside] += (low + high) / 2
    model.save_pretrained(directory)
    return directory


def run_job(tree: Path, model: Path, corpus: Path, output: Path) -> dict:
    command = [sys.executable, "-m", "jobs.annotate", "--config", "configs/annotate_cpu.yaml",
               f"input={corpus}", f"output={output}", f"model={model}", "progress_bars=false",
               "remove_stale=false"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cpu = TreeCpu(proc.pid)
    log, _ = proc.communicate()
    wall = time.perf_counter() - started
    cpu_s = cpu.stop()
    if proc.returncode != 0:
        raise SystemExit(f"jobs.annotate in {tree} failed:\n{log.decode()[-3000:]}")
    summary = json.loads((output / "_manifest.json").read_text())["summary"]
    return {"tokens": summary["tokens"], "docs": summary["rows_in"], "wall_s": wall,
            "pipeline_s": summary["pipeline_s"], "cpu_s": cpu_s,
            "entities": sum(summary["entity_types"].values())}  # fmt: skip


def measure(tree: Path, model: Path, corpora: tuple[Path, Path], out: Path) -> dict:
    half, full = (run_job(tree, model, c, out / f"annotations-{c.name}") for c in corpora)
    steady = (full["cpu_s"] - half["cpu_s"]) / (full["tokens"] - half["tokens"])
    return {
        "tokens": full["tokens"],
        "wall_s": round(full["wall_s"], 1),
        "cpu_s": round(full["cpu_s"], 1),
        "entities": full["entities"],
        "us_per_token_end_to_end": round(full["cpu_s"] / full["tokens"] * 1e6, 2),
        "us_per_token_steady": round(steady * 1e6, 2),
        "half": {k: round(v, 1) if isinstance(v, float) else v for k, v in half.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tokens", type=float, default=10e6, help="sub-tokens in the full corpus")
    parser.add_argument("--out", default="outputs/host-cost")
    parser.add_argument("--baseline-tree", help="another checkout to run as the 'before' peer")
    parser.add_argument("--densities", default=",".join(DENSITIES))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    docs = sample_documents()
    per_copy = 307.6 * len(docs)  # sub-tokens of the sample with the embedded tokenizer
    copies = max(2, round(args.tokens / per_copy))
    corpora = tuple(out / f"corpus-{c}x" for c in (copies // 2, copies))
    for corpus, c in zip(corpora, (copies // 2, copies), strict=True):
        build_corpus(corpus, docs, c)
    trees = {"ours": ROOT}
    if args.baseline_tree:
        trees = {"before": Path(args.baseline_tree).resolve(), **trees}
    results: dict = {}
    for density in args.densities.split(","):
        model = biased_model(out / f"model-{DENSITIES[density]}", DENSITIES[density])
        for name, tree in trees.items():
            row = measure(tree, model, corpora, out / name / density.replace(" ", "-"))
            results[f"{name}, {density}"] = row
            print(f"{name}, {density}: {json.dumps(row)}", flush=True)
    print("\n| peer | tokens | wall s | CPU s | entities | µs/token end to end | µs/token steady |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        print(f"| {key} | {r['tokens']:,} | {r['wall_s']} | {r['cpu_s']} | {r['entities']} | "
              f"{r['us_per_token_end_to_end']} | {r['us_per_token_steady']} |")  # fmt: skip
    for density in args.densities.split(","):
        before, ours = results.get(f"before, {density}"), results.get(f"ours, {density}")
        if before and ours:
            ratio = before["us_per_token_steady"] / ours["us_per_token_steady"]
            print(f"{density}: steady-state host cost before/ours = {ratio:.2f}x")
    (out / "host_cost.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

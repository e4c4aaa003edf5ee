"""Planning a daily PubMed update against a store of N documents: time and peak memory.

.venv/bin/python -m benchmarks.plan_scale [--documents 1000000] [--changes 1000] \\
    [--baseline-tree /path/to/an/older/checkout] [--spread recent|scattered] [--apply]

Builds, without Ray or a model:

- a converted baseline of N synthetic citations (``jobs.pubmed_to_parquet``'s layout
  and schema, ``content_hash`` included, 30,000 records a file, abstracts of the
  sample's lengths made distinct by their PMID), and one update file of U records:
  U/2 revised and U/2 new;
- a Delta store holding the baseline's N documents as a run of the current code
  would have left them (their hashes, the tiny model's fingerprint, the config's
  settings fingerprint, six entities a row), so that only the update is left to do.

The U/2 revised citations are the most recent PMIDs (``--spread recent``) or drawn
at random over the whole range (``scattered``, as in real update files, whose
revisions reach back decades).

Then runs ``jobs.reprocess --config configs/reprocess_pubmed_cpu.yaml plan_only=true``
(read the store's state, resolve PubMed's current records, plan; no Ray, no model)
in this tree and, with ``--baseline-tree``, in the older one, each in its own process,
and prints wall seconds, peak RSS (``/usr/bin/time``) and their ratios. Both must
print the same plan.

With ``--apply``, then runs the update for real in this tree, end to end (plan, a
local Ray cluster, the tiny model on the U documents, one Delta commit), and prints
its wall time and the data files the commit rewrote.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotation import store
from annotation.commit import commit
from annotation.config import CONTENT_HASH, ROW_SETTINGS, ReprocessConfig
from annotation.hashing import content_hash, settings_fingerprint
from annotation.pubmed import FILE_SCHEMA
from benchmarks.store_update import synthetic_entities
from corpora.pubmed_xml import DELETION_SCHEMA
from corpora.pubtator import read_pubtator
from ner import columns as C
from ner.model import model_fingerprint, save_tiny_model
from plumbing.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/reprocess_pubmed_cpu.yaml"
SAMPLE = ROOT.parent / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
PER_FILE = 30_000


def citations(pmids: np.ndarray, stem: str, tag: str, sample: list[dict]) -> pa.Table:
    """Citation rows for ``pmids`` in the converter's schema, text distinct per PMID."""
    n = len(pmids)
    ids = [str(p) for p in pmids]
    pick = [sample[p % len(sample)] for p in pmids]
    titles = [f"{tag}{d['title']}" for d in pick]
    abstracts = [f"{i} {d['abstract']}" for i, d in zip(ids, pick, strict=True)]
    return pa.table(
        {
            "pmid": ids,
            "version": pa.array(np.ones(n, np.int32)),
            "title": titles,
            "abstract": abstracts,
            "language": pa.repeat(pa.scalar("eng"), n),
            "journal": pa.repeat(pa.scalar("J Synth"), n),
            "pub_year": pa.array(np.full(n, 2026, np.int32)),
            "date_revised": pa.repeat(pa.scalar("2026-01-01"), n),
            "source_file": pa.repeat(pa.scalar(f"{stem}.xml.gz"), n),
            "record_index": pa.array(np.arange(n, dtype=np.int64)),
            CONTENT_HASH: [content_hash(pair) for pair in zip(titles, abstracts, strict=True)],
        },
        schema=FILE_SCHEMA,
    )


def build(root: Path, documents: int, changes: int, spread: str) -> tuple[Path, Path, Path]:
    sample = read_pubtator(SAMPLE)
    pubmed, store_dir, model = root / "pubmed", root / "store", root / "model"
    (pubmed / "citations").mkdir(parents=True)
    (pubmed / "deletions").mkdir()
    save_tiny_model(model)
    config = load_config(ReprocessConfig, ROOT / CONFIG, [f"model={model}", "input=[x]"])
    settings_fp = settings_fingerprint({name: getattr(config, name) for name in ROW_SETTINGS})
    fingerprint = model_fingerprint(model)
    pmids = np.arange(1, documents + 1)
    number, parts = 0, []
    for number, start in enumerate(range(0, documents, PER_FILE), 1):
        stem = f"pubmed26n{number:04d}"
        table = citations(pmids[start : start + PER_FILE], stem, "", sample)
        pq.write_table(table, pubmed / "citations" / f"{stem}.parquet")
        pq.write_table(DELETION_SCHEMA.empty_table(), pubmed / "deletions" / f"{stem}.parquet")
        rows = pa.table(
            {
                C.DOC_ID: table["pmid"],
                C.ENTITIES: synthetic_entities(table.num_rows, 6),
                C.STATUS: pa.repeat(pa.scalar(C.STATUS_OK), table.num_rows),
                C.MODEL_FINGERPRINT: pa.repeat(pa.scalar(fingerprint), table.num_rows),
                CONTENT_HASH: table[CONTENT_HASH],
                store.SETTINGS_FINGERPRINT: pa.repeat(pa.scalar(settings_fp), table.num_rows),
            }
        )
        parts.append(store.table_rows(rows, None, str(model), fingerprint))
    commit(str(store_dir), None, pa.concat_tables(parts), metadata={})
    # The update: U/2 revisions (of recent citations, or scattered), U/2 new ones.
    if spread == "recent":
        revised = pmids[-(changes // 2) :]
    else:
        revised = np.sort(np.random.default_rng(0).choice(pmids, changes // 2, replace=False))
    new = np.arange(documents + 1, documents + 1 + changes - len(revised))
    stem = f"pubmed26n{number + 1:04d}"
    update = citations(np.concatenate([revised, new]), stem, "Revised: ", sample)
    pq.write_table(update, pubmed / "citations" / f"{stem}.parquet")
    pq.write_table(DELETION_SCHEMA.empty_table(), pubmed / "deletions" / f"{stem}.parquet")
    return pubmed, store_dir, model


def plan_in(tree: Path, pubmed: Path, store_dir: Path, model: Path, apply: bool = False) -> dict:
    command = ["/usr/bin/time", "-f", "maxrss_kb=%M", sys.executable, "-m", "jobs.reprocess",
               "--config", CONFIG, f"input=[{pubmed}]", f"store={store_dir}", f"model={model}",
               f"plan_only={str(not apply).lower()}", "progress_bars=false"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"plan in {tree} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    counts = re.search(r"to annotate: (.*)", proc.stdout).group(1)
    rss = int(re.search(r"maxrss_kb=(\d+)", proc.stderr).group(1))
    if apply:
        print(proc.stdout.strip())
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(rss / 1024), "plan": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--baseline-tree", help="an older checkout to compare against")
    parser.add_argument("--work-dir", help="keep the synthetic data here (default: a temp dir)")
    parser.add_argument("--spread", choices=("recent", "scattered"), default="recent")
    parser.add_argument("--apply", action="store_true", help="then run the update end to end")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work_dir or tmp)
        started = time.perf_counter()
        pubmed, store_dir, model = build(root, args.documents, args.changes, args.spread)
        print(f"built {args.documents:,} documents in {time.perf_counter() - started:.0f} s")
        results = {}
        trees = {"ours": ROOT} | (
            {"baseline": Path(args.baseline_tree)} if args.baseline_tree else {}
        )
        for name, tree in trees.items():
            results[name] = plan_in(tree, pubmed, store_dir, model)
            print(f"{name}: {results[name]}", flush=True)
        if "baseline" in results:
            base, ours = results["baseline"], results["ours"]
            assert base["plan"] == ours["plan"], "the two trees planned differently"
            print(
                f"ratio ours/baseline: wall {ours['wall_s'] / base['wall_s']:.3f}, "
                f"peak RSS {ours['peak_rss_mb'] / base['peak_rss_mb']:.3f}"
            )
        if args.apply:
            table = store.open_table(str(store_dir))
            files = len(table.file_uris())
            results["apply"] = plan_in(ROOT, pubmed, store_dir, model, apply=True)
            # The run's own commit, not the vacuum that follows it.
            entries = store.open_table(str(store_dir)).history()
            metrics = next(e for e in entries if e.get(store.RUN_KEY))["operationMetrics"]
            results["apply"]["files_rewritten"] = (
                f"{metrics.get('num_target_files_removed', 0)} of {files}"
            )
            print(f"apply: {results['apply']}", flush=True)
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Store at scale: jobs.reprocess's driver on N and on 10 x N documents, and its plan at 10 M ids.

python -m benchmarks.store_scale [--documents 100000 1000000] [--plan-ids 1000000 10000000] \\
    [--no-runs] [--no-plan] [--workdir DIR]

Issue #28: the driver of ``jobs.reprocess`` holds plans and metadata only. For each N
of ``--documents`` (the smaller first), a corpus of ``pmid, title, abstract`` files
(10,000 rows a file, ids sortable 8-digit strings, texts of the 500 sample abstracts'
lengths made distinct by their id, no dictionary encoding: ``benchmarks.scale_100x``)
and three runs of ``python -m jobs.reprocess --config configs/reprocess_cpu.yaml`` in
a child process, each with its own local Ray cluster, with the 2 x 32 tiny BERT
biased to about 10% entity tokens (``benchmarks.host_cost.biased_model``):

1. the first run, into a new store (the workers' files committed as add actions);
2. a daily update: 1% of the documents changed, scattered over the id range as real
   update files are: N/200 revised texts at random ids, N/200 new ids between
   existing ones (ids are even, new ones odd), and N/10,000 deletions; the corpus
   directory is rewritten as a whole (a MERGE fed by a stream);
3. a model change: one key added to the model's ``config.json``, which changes its
   fingerprint, so every document is re-annotated (a full rewrite by add actions).

Before the update, ``plan_only=true`` on the same inputs gives the plan's share of it.

The driver's peak RSS is its own high-water mark, ``VmHWM`` of ``/proc/self/status``,
printed as it exits by a wrapper that runs ``jobs.reprocess`` with ``runpy`` as
``python -m`` does. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps it across
``execve``, so the child starts with this benchmark's own RSS at the fork (about 750
MiB: every run read 748 MiB). ``/usr/bin/time``'s figure (``wait4``) is the largest of
the process and of the descendants it reaped, the Ray daemons it started among them;
on a first run of 2,000 documents it read 296,940 kB against the driver's 295,464. Not
sampled: a high-water mark misses no spike. Wall time is the child process's, Ray's
start-up included. After each run the store is read back (``doc_id, run_id``): every
corpus id exactly once and no other, this run's rows as many as it annotated.

The plan at M ids (``--plan-ids``): a corpus of M ids, the update above applied, and
a store holding the corpus before the update as the first run leaves it (files of
2,000 rows, one per write batch; six entities a row; the model's and the settings'
fingerprints), built without Ray or a model; then ``plan_only=true`` (read the
store's state and the corpus, hash the texts, classify) and its driver peak RSS. The
per-id bytes between the two sizes give the linear extrapolation to 36 M ids
(PubMed), against the issue's budget of 2 GB (2e9 bytes).

Prints one table (runs x the two sizes and their ratio) and PASS/FAIL: RSS ratio at
most 1.2x, wall ratio at most 1.05 x the size ratio, each id once, the plan at 36 M
at most 2 GB. Set ``RAY_TMPDIR`` to keep its Ray clusters apart from others'.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

from annotation import store
from annotation.commit import commit_files
from annotation.config import CONTENT_HASH, ROW_SETTINGS, ReprocessConfig
from annotation.hashing import content_hash, settings_fingerprint
from benchmarks.annotate_throughput import PUBTATOR
from benchmarks.host_cost import biased_model
from benchmarks.store_update import synthetic_entities
from corpora.pubtator import read_pubtator
from ner import columns as C
from ner.model import model_fingerprint
from plumbing.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/reprocess_cpu.yaml"
FILE_ROWS = 10_000  # corpus rows a file
STORE_FILE_ROWS = 2_000  # a first run's data file: at most one write batch (write_batch_size)
FIRST_ID = 10_000_000  # ids 10,000,000 + 2i: 8 digits up to 45 M documents, so sortable
PUBMED_IDS = 36_000_000
BUDGET_BYTES = 2e9  # the plan's driver at 36 M ids
ENTITY_SHARE = 0.10
# jobs.reprocess as ``python -m`` runs it, then its own peak RSS on stderr (VmHWM, after
# Ray's atexit shutdown: handlers run last-registered first).
DRIVER = (
    "import atexit, re, runpy, sys\n"
    "atexit.register(lambda: print('driver_hwm_kb=' + re.search(r'VmHWM:\\s*(\\d+)', "
    "open('/proc/self/status').read()).group(1), file=sys.stderr, flush=True))\n"
    "runpy.run_module('jobs.reprocess', run_name='__main__', alter_sys=True)\n"
)


@dataclass
class Update:
    """The id universe of a corpus before and after one daily update."""

    ids: np.ndarray  # every id of either version, sorted
    before: np.ndarray  # in the corpus of the first run
    after: np.ndarray  # in the updated corpus
    revised: np.ndarray  # text changed by the update

    @property
    def counts(self) -> dict[str, int]:
        new = int(np.sum(self.after & ~self.before))
        deleted = int(np.sum(self.before & ~self.after))
        revised = int(np.sum(self.revised))
        return {"before": int(np.sum(self.before)), "after": int(np.sum(self.after)),
                "new": new, "revised": revised, "deleted": deleted}  # fmt: skip


def daily_update(n: int, seed: int = 0) -> Update:
    """N documents, then 1% changed at random over the id range: half revised, half new."""
    base = FIRST_ID + 2 * np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    revised, new, deleted = n // 200, n // 200, max(1, n // 10_000)
    touched = rng.choice(n, revised + deleted, replace=False)
    new_ids = base[rng.choice(n, new, replace=False)] + 1  # odd: between two stored ids
    ids = np.sort(np.concatenate([base, new_ids]))
    return Update(
        ids=ids,
        before=ids % 2 == 0,
        after=~np.isin(ids, base[touched[revised:]]),
        revised=np.isin(ids, base[touched[:revised]]),
    )


class Texts:
    """Titles and abstracts of the sample's lengths for any id, as Arrow arrays."""

    def __init__(self):
        sample = read_pubtator(PUBTATOR)
        titles = [d["title"] for d in sample]
        self.size = len(sample)
        self.titles = pa.array(titles + [f"Revised: {t}" for t in titles])
        self.abstracts = pa.array([d["abstract"] for d in sample])

    def table(self, ids: np.ndarray, revised: np.ndarray) -> pa.Table:
        pick = (ids * 7919) % self.size  # the same text for an id in every version
        pmids = pc.cast(pa.array(ids), pa.string())
        titles = pc.take(self.titles, pa.array(pick + self.size * revised))
        abstracts = pc.take(self.abstracts, pa.array(pick))
        abstracts = pc.binary_join_element_wise(pmids, abstracts, " ")
        return pa.table({"pmid": pmids, "title": titles, "abstract": abstracts})


def write_corpus(directory: Path, update: Update, texts: Texts, after: bool) -> Path:
    """The corpus before or after the update, in files of 10,000 rows, the directory replaced."""
    keep = update.after if after else update.before
    ids = update.ids[keep]
    revised = (update.revised if after else np.zeros_like(update.revised))[keep]
    fresh = directory.with_name(directory.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for part, start in enumerate(range(0, len(ids), FILE_ROWS)):
        table = texts.table(ids[start : start + FILE_ROWS], revised[start : start + FILE_ROWS])
        pq.write_table(table, fresh / f"part-{part:05d}.parquet", use_dictionary=False)
    shutil.rmtree(directory, ignore_errors=True)
    fresh.rename(directory)
    return directory


def run_driver(overrides: list[str]) -> dict:
    """One ``jobs.reprocess`` in a child process: wall s, driver peak RSS, console, counts."""
    command = [sys.executable, "-c", DRIVER, "--config", CONFIG, "progress_bars=false", *overrides]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"jobs.reprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    rss = int(re.search(r"driver_hwm_kb=(\d+)", proc.stderr).group(1)) * 1024
    plan = re.search(r"to annotate: (.*)", proc.stdout).group(1)
    counts = {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+) ([\d,]+)", plan)}
    run = re.search(r"run (\S+) committed table version", proc.stdout)
    return {"wall_s": wall, "rss": rss, "counts": counts, "console": proc.stdout,
            "run_id": run.group(1) if run else None}  # fmt: skip


def check_store(store_dir: Path, update: Update, after: bool, result: dict) -> str:
    """Every corpus id in the store exactly once, and the run's rows as many as it annotated."""
    table = DeltaTable(str(store_dir)).to_pyarrow_dataset().to_table(columns=[C.DOC_ID, C.RUN_ID])
    expected = pc.cast(pa.array(update.ids[update.after if after else update.before]), pa.string())
    ids = table[C.DOC_ID].combine_chunks()
    distinct = pc.count_distinct(ids).as_py()
    if len(ids) != len(expected) or distinct != len(ids):
        raise SystemExit(f"store holds {len(ids):,} rows, {distinct:,} ids, for {len(expected):,}")
    if not pc.all(pc.is_in(expected, value_set=ids)).as_py():
        raise SystemExit("some corpus ids are missing from the store")
    mine = pc.sum(pc.equal(table[C.RUN_ID], result["run_id"])).as_py() or 0
    if mine != result["counts"]["annotated"]:
        raise SystemExit(f"{mine:,} rows of run {result['run_id']}, {result['counts']} planned")
    return f"{len(ids):,} rows, each of the {len(expected):,} corpus ids once; {mine:,} by this run"


def expect(counts: dict, **wanted: int) -> None:
    got = {k: counts.get(k) for k in wanted}
    if got != wanted:
        raise SystemExit(f"plan {counts}, expected {wanted}")


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(name: str, result: dict, check: str = "") -> None:
    print(
        f"  {name:13s} wall {result['wall_s']:7.1f} s, driver peak RSS {mib(result['rss']):>9s}; "
        + ", ".join(f"{k} {v:,}" for k, v in result["counts"].items()),
        flush=True,
    )
    for line in result["console"].strip().splitlines():
        if line.startswith(("rows written", "all documents", "annotated ", "WARNING")):
            print(f"      {line}")
    if check:
        print(f"      store: {check}", flush=True)


def three_runs(root: Path, n: int, texts: Texts, template: Path) -> dict[str, dict]:
    """First run, daily update (after its plan alone), model change on N documents."""
    update = daily_update(n)
    c = update.counts
    corpus, store_dir, model = root / f"corpus-{n}", root / f"store-{n}", root / f"model-{n}"
    shutil.copytree(template, model)
    args = [f"input={corpus}", f"store={store_dir}", f"model={model}"]
    started = time.perf_counter()
    write_corpus(corpus, update, texts, after=False)
    print(f"N = {n:,}: corpus written in {time.perf_counter() - started:.0f} s; update {c}")
    results = {}

    results["first run"] = first = run_driver(args)
    expect(first["counts"], new=c["before"], carried=0, annotated=c["before"])
    report("first run", first, check_store(store_dir, update, False, first))

    write_corpus(corpus, update, texts, after=True)
    results["plan (update)"] = plan = run_driver([*args, "plan_only=true"])
    report("plan (update)", plan)
    results["update"] = daily = run_driver(args)
    wanted = dict(new=c["new"], changed=c["revised"], deleted=c["deleted"], model_changed=0)
    expect(daily["counts"], annotated=c["new"] + c["revised"], **wanted)
    report("update", daily, check_store(store_dir, update, True, daily))

    config = json.loads((model / "config.json").read_text())
    config["store_scale_revision"] = 1  # a new fingerprint, the same weights
    (model / "config.json").write_text(json.dumps(config, indent=2))
    results["model change"] = change = run_driver(args)
    expect(change["counts"], model_changed=c["after"], carried=0, annotated=c["after"])
    report("model change", change, check_store(store_dir, update, True, change))
    for path in (corpus, store_dir, model):
        shutil.rmtree(path)
    return results


def build_plan_inputs(root: Path, ids: int, texts: Texts, model: Path) -> tuple[Path, Path]:
    """A store of ``ids`` documents as a first run leaves it, and the corpus after the update."""
    update = daily_update(ids)
    corpus, store_dir = root / f"plan-corpus-{ids}", root / f"plan-store-{ids}"
    write_corpus(corpus, update, texts, after=True)
    config = load_config(ReprocessConfig, ROOT / CONFIG, [f"model={model}", "input=[x]"])
    settings_fp = settings_fingerprint({name: getattr(config, name) for name in ROW_SETTINGS})
    fingerprint = model_fingerprint(model)
    staging = root / f"plan-staging-{ids}"
    staging.mkdir(parents=True)
    stored = update.ids[update.before]
    files = []
    for part, start in enumerate(range(0, len(stored), STORE_FILE_ROWS)):
        chunk = stored[start : start + STORE_FILE_ROWS]
        text = texts.table(chunk, np.zeros(len(chunk), bool))
        pairs = zip(text["title"].to_pylist(), text["abstract"].to_pylist(), strict=True)
        n = len(chunk)
        rows = pa.table(
            {
                C.DOC_ID: text["pmid"],
                C.ENTITIES: synthetic_entities(n, 6),
                C.STATUS: pa.repeat(pa.scalar(C.STATUS_OK), n),
                C.MODEL_FINGERPRINT: pa.repeat(pa.scalar(fingerprint), n),
                CONTENT_HASH: pa.array([content_hash(p) for p in pairs], pa.string()),
                store.SETTINGS_FINGERPRINT: pa.repeat(pa.scalar(settings_fp), n),
            }
        )
        path = staging / f"part-{part:06d}.parquet"
        pq.write_table(store.table_rows(rows, None, str(model), fingerprint), path)
        files.append(str(path))
    commit_files(str(store_dir), None, pafs.LocalFileSystem(), files, "synthetic", metadata={})
    shutil.rmtree(staging)
    return corpus, store_dir


def plan_at(root: Path, ids: int, texts: Texts, model: Path) -> dict:
    started = time.perf_counter()
    corpus, store_dir = build_plan_inputs(root, ids, texts, model)
    print(f"plan at {ids:,} ids: inputs built in {time.perf_counter() - started:.0f} s", flush=True)
    args = [f"input={corpus}", f"store={store_dir}", f"model={model}", "plan_only=true"]
    result = run_driver(args)
    c = daily_update(ids).counts
    expect(result["counts"], new=c["new"], changed=c["revised"], deleted=c["deleted"])
    report(f"plan {ids:,}", result)
    shutil.rmtree(corpus)
    shutil.rmtree(store_dir)
    return result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(sizes: list[int], runs: dict, plan_ids: list[int], plans: dict) -> bool:
    passed = True
    if runs:
        small, large = sizes
        factor = large / small
        print(f"\n{'':24s}{f'N = {small:,}':>16s}{f'N = {large:,}':>16s}{'ratio':>8s}  target")
        # Not a measurement: what the growth between the two sizes, if linear, gives at
        # the next factor (at 10,000 and 100,000 documents: 1,000,000 against 100,000).
        further, growth = round(large * factor), []
        for name in ("first run", "update", "model change", "plan (update)"):
            a, b = runs[small][name], runs[large][name]
            rss = b["rss"] / a["rss"]
            wall = b["wall_s"] / a["wall_s"]
            targeted = name != "plan (update)"
            ok_rss, ok_wall = rss <= 1.2, wall <= 1.05 * factor
            if targeted:
                passed &= ok_rss and ok_wall
            print(
                f"{name + ' driver RSS':24s}{mib(a['rss']):>16s}{mib(b['rss']):>16s}{rss:7.2f}x"
                + (f"  <= 1.2x {verdict(ok_rss)}" if targeted else "  (context)")
            )
            print(
                f"{name + ' wall':24s}{a['wall_s']:14.1f} s{b['wall_s']:14.1f} s{wall:7.2f}x"
                + (f"  <= {1.05 * factor:g}x {verdict(ok_wall)}" if targeted else "  (context)")
            )
            slope = (b["rss"] - a["rss"]) / (large - small)
            at = b["rss"] + slope * (further - large)
            growth.append(
                f"  {name:14s}{slope:7,.0f} bytes a document -> {mib(at)} at {further:,}, "
                f"{at / b['rss']:.2f}x that at {large:,}"
            )
        print(f"{'each id exactly once':24s}{'yes':>16s}{'yes':>16s}{'':8s}  PASS")
        print(f"driver RSS growth between the two, extrapolated linearly to N = {further:,}:")
        print("\n".join(growth))
    if len(plans) == 2:
        small, large = plan_ids
        a, b = plans[small]["rss"], plans[large]["rss"]
        per_id = (b - a) / (large - small)
        projected = b + per_id * (PUBMED_IDS - large)
        ok = projected <= BUDGET_BYTES
        passed &= ok
        head = f"{f'{small:,} ids':>16s}{f'{large:,} ids':>16s}"
        print(f"\n{'plan (plan_only)':24s}{head}{'ratio':>8s}")
        print(f"{'plan driver RSS':24s}{mib(a):>16s}{mib(b):>16s}{b / a:7.2f}x")
        wa, wb = plans[small]["wall_s"], plans[large]["wall_s"]
        print(f"{'plan wall':24s}{wa:14.1f} s{wb:14.1f} s{wb / wa:7.2f}x")
        print(
            f"plan: {per_id:,.0f} bytes a id between the two; at {PUBMED_IDS:,} ids "
            f"{projected / 1e9:.2f} GB ({mib(projected)}), budget {BUDGET_BYTES / 1e9:g} GB: "
            f"{verdict(ok)}"
        )
    print(f"\noverall: {verdict(passed)}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_scale", description=__doc__)
    parser.add_argument("--documents", type=int, nargs=2, default=[100_000, 1_000_000])
    parser.add_argument("--plan-ids", type=int, nargs=2, default=[1_000_000, 10_000_000])
    parser.add_argument("--no-runs", action="store_true", help="only the plan at --plan-ids")
    parser.add_argument("--no-plan", action="store_true", help="only the runs at --documents")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not os.environ.get("RAY_TMPDIR"):
        print("note: RAY_TMPDIR is not set; Ray's files go to /tmp/ray", flush=True)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="store-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    texts = Texts()
    sizes, plan_ids = sorted(args.documents), sorted(args.plan_ids)
    runs, plans = {}, {}
    try:
        template = biased_model(root / "model", entity_share=ENTITY_SHARE)
        if not args.no_runs:
            for n in sizes:
                runs[n] = three_runs(root, n, texts, template)
        if not args.no_plan:
            for ids in plan_ids:
                plans[ids] = plan_at(root, ids, texts, template)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if print_table(sizes, runs, plan_ids, plans) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Score a token-classification model on a CRAFT split, or on any PubTator/BioC gold corpus.

    python -m jobs.evaluate --model DIR [--split devel] [--spans] [--update-model-card] [--out DIR]
    python -m jobs.evaluate --model DIR --gold FILE [--types Chemical=Chemical,Disease=-] [--out DIR]
        [--annotate-config YAML] [key=value ...]

CRAFT (word level, seqeval): metrics.json, scores.md,
per_type_f1.png. ``--spans`` also runs the split, sentences joined into documents,
through the annotation job and scores its spans (below) in OUT/spans; ``--update-model-card``
(devel) then writes each type's lowest score threshold reaching 0.9 precision
into the model directory's README.md.

Gold (``--gold``, PubTator or BioC XML, offsets into title + " " + abstract): the
documents go through the annotation job itself (``--annotate-config``, ``key=value``)
and its spans are matched one-to-one against the gold, strict and lenient, P/R/F1
per type and micro (README, "Evaluate on your own gold corpus"). Malformed gold
exits with code 2 and names the file and line. Decoding, for spans and word tags
alike: ``decoding=``, else ``--decoding``, else the config file's, else viterbi.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from annotation.gold_eval import (
    annotate_gold,
    effective_decoding,
    gold_annotate_config,
    model_card_section,
    write_reports,
)
from corpora import gold_metrics as gm
from corpora.corpus import InputError
from corpora.gold import GoldFormatError, iob_documents, read_gold
from ner.labels import UnknownLabelError, canonical_type
from ner.model import ModelNotFoundError, load_classifier
from ner.viterbi import DECODINGS
from plumbing.config import ConfigError
from training.craft import CraftDataMissingError, read_iob_file, resolve_data_dir
from training.evaluate import plot_per_type_f1, score
from training.export import update_model_card
from training.metrics import per_type_table

ERRORS = (CraftDataMissingError, ModelNotFoundError, UnknownLabelError, GoldFormatError, gm.TypeMapError, ConfigError, InputError, FileNotFoundError)  # fmt: skip


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m jobs.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--split", default="devel", help="CRAFT: train, devel or test")
    parser.add_argument("--data-dir", help="CRAFT-IOB folder (only the scored split is needed)")
    parser.add_argument("--out", help="output folder (default: <model>/eval-<split or gold>)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-sentences", type=int, help="CRAFT: only the first N sentences")
    for flag, what in (("--spans", "CRAFT: also score spans"), ("--update-model-card", "above")):
        parser.add_argument(flag, action="store_true", help=what)
    parser.add_argument("--gold", help="gold corpus: PubTator file, or BioC XML (.xml)")
    parser.add_argument("--format", default="auto", help="auto, pubtator or bioc")
    parser.add_argument("--types", help="gold->model types, 'A=A,B=-', or a YAML file")
    parser.add_argument("--annotate-config", help="jobs.annotate YAML for the annotation run")
    parser.add_argument("--decoding", choices=DECODINGS, help="default: the config file's")
    parser.add_argument("overrides", nargs="*", help="annotation config key=value overrides")
    args = parser.parse_args(argv)
    if args.decoding:  # given, it beats the file; a default here would hide the file's
        args.overrides = [f"decoding={args.decoding}", *args.overrides]
    return args


def score_documents(args, documents, type_map, out: Path, title: str) -> dict:
    """Annotate gold documents with the annotation job, match, write the reports."""
    started = time.perf_counter()
    resolved = gm.resolve_type_map(
        type_map, {m.type for d in documents for m in d.mentions}, canonical_type
    )
    config = gold_annotate_config(args.model, out / "work", args.annotate_config, args.overrides)
    run = annotate_gold(documents, config)
    gold, predicted = gm.project(
        [m for d in documents for m in d.mentions], run.predictions, resolved
    )
    scores, curves = gm.score(gold, predicted), gm.pr_curve(gold, predicted)
    extra = {"model": args.model, "gold": title, "documents": len(documents)}
    extra |= {"type_map": resolved, "not_ok": run.not_ok, "run_id": run.summary.run_id}
    extra["wall_s"] = round(time.perf_counter() - started, 1)
    write_reports(out, scores, curves, title, extra)
    print(run.summary.format())
    print((out / "scores.md").read_text().split("\n", 2)[2] + "\n" + gm.thresholds_table(curves))
    if run.not_ok:
        print(f"WARNING: {len(run.not_ok)} document(s) not annotated ok: {run.not_ok}")
    print(f"wrote {out}/scores.md, metrics.json, per_type_f1.png, pr_curve.csv/.json/.png")
    return curves


def evaluate_gold(args) -> int:
    documents, gold = read_gold(args.gold, args.format), Path(args.gold)
    type_map = gm.parse_type_map(args.types) if args.types else None
    out = Path(args.out or Path(args.model) / f"eval-{gold.stem}")
    score_documents(args, documents, type_map, out, f"{Path(args.model).name} on {gold.name}")
    return 0


def evaluate_craft(args) -> int:
    path = resolve_data_dir(args.data_dir, required=f"{args.split}.tsv") / f"{args.split}.tsv"
    split = read_iob_file(path, args.split)  # only the split scored, not all three
    loaded = load_classifier(args.model)
    sentences = split.sentences[: args.max_sentences]
    tokens, tags = [s.tokens for s in sentences], [s.tags for s in sentences]
    args.decoding = effective_decoding(args.annotate_config, args.overrides)
    metrics = score(loaded, tokens, tags, args.split, args.batch_size, args.decoding)
    out = Path(args.out or Path(args.model) / f"eval-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "fingerprint": loaded.fingerprint, "split": args.split}
    record |= {"decoding": args.decoding, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    table = per_type_table(metrics, prefix=args.split)
    (out / "scores.md").write_text(f"# {args.model} on {args.split}\n\n{table}\n")
    title = f"{Path(args.model).name} on {args.split}"
    plot_per_type_f1(metrics, out / "per_type_f1.png", args.split, title)
    print(f"{table}\nwrote {out}/metrics.json, scores.md, per_type_f1.png")
    if args.spans or args.update_model_card:
        documents = iob_documents(list(zip(tokens, tags, strict=True)), args.split)
        args.overrides.insert(0, "word_unit=whitespace")  # CRAFT's tokens are its words
        curves = score_documents(args, documents, None, out / "spans", f"{title} (spans)")
        if args.update_model_card:
            print(
                f"updated {update_model_card(args.model, model_card_section(args.split, curves))}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.update_model_card and (args.gold or args.split != "devel"):
            raise ConfigError("--update-model-card scores the CRAFT devel split; drop --gold")
        return evaluate_gold(args) if args.gold else evaluate_craft(args)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Score a token-classification model on a CRAFT split, or on any PubTator/BioC gold corpus.

    python -m jobs.evaluate model=DIR [split=devel] [spans=true] [update_model_card=true] [out=DIR]
    python -m jobs.evaluate model=DIR gold=FILE ["types={Chemical: Chemical, Disease: '-'}"]
        [out=DIR] [annotate_config=YAML] [annotate.KEY=VALUE ...]

CRAFT (word level, seqeval): metrics.json, scores.md,
per_type_f1.png. ``spans=true`` also runs the split, sentences joined into documents,
through the annotation job and scores its spans (below) in OUT/spans; ``update_model_card=true``
(devel) then writes each type's lowest score threshold reaching 0.9 precision
into the model directory's README.md.

Gold (``gold=``, PubTator or BioC XML, offsets into title + " " + abstract): the
documents go through the annotation job itself (``annotate_config``, ``annotate.KEY=VALUE``)
and its spans are matched one-to-one against the gold, strict and lenient, P/R/F1
per type and micro (README, "Evaluate on your own gold corpus"). Malformed gold
exits with code 2 and names the file and line. Decoding, for spans and word tags
alike: ``annotate.decoding=``, else ``decoding=``, else the config file's, else viterbi.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from annotation.gold_eval import (
    EvaluateConfig,
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
from plumbing.config import ConfigError, job_main, parse_job_args
from training.craft import CraftDataMissingError, read_iob_file, resolve_data_dir
from training.evaluate import plot_per_type_f1, score
from training.export import update_model_card
from training.metrics import per_type_table

ERRORS = (CraftDataMissingError, ModelNotFoundError, UnknownLabelError, GoldFormatError, gm.TypeMapError, ConfigError, InputError, FileNotFoundError)  # fmt: skip


def parse_args(argv) -> EvaluateConfig:
    return parse_job_args(EvaluateConfig, argv, "python -m jobs.evaluate", __doc__)


def score_documents(args, documents, type_map, out: Path, title: str, overrides=None) -> dict:
    """Annotate gold documents with the annotation job, match, write the reports."""
    started = time.perf_counter()
    resolved = gm.resolve_type_map(
        type_map, {m.type for d in documents for m in d.mentions}, canonical_type
    )
    overrides = args.overrides if overrides is None else overrides
    config = gold_annotate_config(args.model, out / "work", args.annotate_config, overrides)
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
    type_map = gm.parse_type_map(args.types) if args.types is not None else None
    out = Path(args.out or Path(args.model) / f"eval-{gold.stem}")
    score_documents(args, documents, type_map, out, f"{Path(args.model).name} on {gold.name}")
    return 0


def evaluate_craft(args) -> int:
    path = resolve_data_dir(args.data_dir, required=f"{args.split}.tsv") / f"{args.split}.tsv"
    split = read_iob_file(path, args.split)  # only the split scored, not all three
    loaded = load_classifier(args.model)
    sentences = split.sentences[: args.max_sentences]
    tokens, tags = [s.tokens for s in sentences], [s.tags for s in sentences]
    decoding = effective_decoding(args.annotate_config, args.overrides)
    metrics = score(loaded, tokens, tags, args.split, args.batch_size, decoding)
    out = Path(args.out or Path(args.model) / f"eval-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "fingerprint": loaded.fingerprint, "split": args.split}
    record |= {"decoding": decoding, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    table = per_type_table(metrics, prefix=args.split)
    (out / "scores.md").write_text(f"# {args.model} on {args.split}\n\n{table}\n")
    title = f"{Path(args.model).name} on {args.split}"
    plot_per_type_f1(metrics, out / "per_type_f1.png", args.split, title)
    print(f"{table}\nwrote {out}/metrics.json, scores.md, per_type_f1.png")
    if args.spans or args.update_model_card:
        documents = iob_documents(list(zip(tokens, tags, strict=True)), args.split)
        overrides = {"word_unit": "whitespace"} | args.overrides  # CRAFT's tokens are its words
        curves = score_documents(
            args, documents, None, out / "spans", f"{title} (spans)", overrides
        )
        if args.update_model_card:
            print(
                f"updated {update_model_card(args.model, model_card_section(args.split, curves))}"
            )
    return 0


@job_main(EvaluateConfig, errors=ERRORS)
def main(args: EvaluateConfig) -> int:
    return evaluate_gold(args) if args.gold else evaluate_craft(args)


if __name__ == "__main__":
    sys.exit(main())

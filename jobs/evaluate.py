"""Score a token-classification model directory on a CRAFT split.

    python -m jobs.evaluate --model outputs/train/minilm-cpu/model [--split devel] [--out DIR]

Works with any model whose labels map onto the scheme (ours, or a published CRAFT
model spelling types as B-GENE). Writes metrics.json, scores.md and per_type_f1.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ner.labels import UnknownLabelError
from ner.model import ModelNotFoundError, load_classifier
from training.craft import CraftDataMissingError, read_iob_file, resolve_data_dir
from training.evaluate import plot_per_type_f1, score
from training.metrics import per_type_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--split", default="devel", help="train, devel or test (default: devel)")
    parser.add_argument("--data-dir", help="CRAFT-IOB folder")
    parser.add_argument("--out", help="output folder (default: <model>/eval-<split>)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-sentences", type=int, help="score only the first N sentences")
    parser.add_argument(
        "--decoding",
        choices=("viterbi", "argmax"),
        default="viterbi",
        help="most probable valid BIO sequence (default), or each word's best label",
    )
    args = parser.parse_args(argv)
    try:
        path = resolve_data_dir(args.data_dir) / f"{args.split}.tsv"
        if not path.is_file():
            raise CraftDataMissingError(f"split {args.split!r} not found: no {path}")
        split = read_iob_file(path, args.split)  # only the split scored, not all three
        loaded = load_classifier(args.model)
    except (CraftDataMissingError, ModelNotFoundError, UnknownLabelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sentences = split.sentences[: args.max_sentences]
    metrics = score(
        loaded,
        [s.tokens for s in sentences],
        [s.tags for s in sentences],
        args.split,
        args.batch_size,
        args.decoding,
    )
    out = Path(args.out or Path(args.model) / f"eval-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "model": args.model,
        "fingerprint": loaded.fingerprint,
        "split": args.split,
        "decoding": args.decoding,
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    table = per_type_table(metrics, prefix=args.split)
    (out / "scores.md").write_text(f"# {args.model} on {args.split}\n\n{table}\n")
    plot_per_type_f1(
        metrics, out / "per_type_f1.png", args.split, f"{Path(args.model).name} on {args.split}"
    )
    print(table)
    print(f"wrote {out}/metrics.json, scores.md, per_type_f1.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

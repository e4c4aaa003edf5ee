"""What abbreviation resolution (#31 point 3) changes: gold F1 and short forms labelled inconsistently.

python -m benchmarks.abbreviation_effect [--model outputs/train/demo/model]
    [--gold ../shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt] [--out outputs/bench/abbreviations]
python -m benchmarks.abbreviation_effect --stage-cost

Runs ``jobs.evaluate`` on the gold corpus twice, with ``annotate.abbreviations=false``
and ``=true`` (Chemical scored, Disease not: the README's form), and reads back from
each run (``include_text``) its annotations. Prints, per setting:

- Chemical strict and lenient precision, recall and F1 (the job's metrics.json);
- the entities written, and those with ``via_abbreviation``;
- short forms labelled inconsistently: (document, short form) pairs, for each
  short form that the document defines (:func:`ner.abbreviations.find_definitions`)
  and uses at least twice, whose occurrences do not all have one label. An
  occurrence's label is the type of the entity overlapping it, ``O`` if none;
- the step's cost in milliseconds per document, best of 3 passes in one process
  over the run without it: the definition finder alone (Python over each text),
  and the whole resolution of its 500 rows as one batch (finder + numpy).
  The jobs' wall times are not printed: on a shared machine they time the neighbours.

``--stage-cost`` prints instead what the step adds to the decoding stage: the 500
abstracts tokenized, with ``benchmarks.decode_speed``'s synthetic predictions, through
``SpanDecodeStage`` and ``DecodeWithAbbreviationsStage`` (argmax) in batches of 64,
milliseconds per document, best of 5 (CPU time is the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT.parent / "shared/data/pubmed-sample/CDR_TrainingSet.PubTator.txt"
TYPES = "types={Chemical: Chemical, Disease: '-'}"


def evaluate(model: str, gold: Path, out: Path, abbreviations: bool) -> list[str]:
    """One jobs.evaluate run; its command."""
    setting = str(abbreviations).lower()
    command = [
        sys.executable,
        "-m",
        "jobs.evaluate",
        f"model={model}",
        f"gold={gold}",
        TYPES,
        f"out={out}",
        f"annotate.abbreviations={setting}",
        "annotate.include_text=true",
        "annotate.dashboard=false",
    ]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return command


def chemical_scores(out: Path) -> dict[str, dict[str, float]]:
    """Chemical's strict and lenient P, R, F1 from a run's metrics.json."""
    scores = json.loads((out / "metrics.json").read_text())["scores"]
    return {mode: scores[mode]["Chemical"] for mode in ("strict", "lenient")}


def annotations(out: Path) -> list[dict]:
    """The run's rows (doc_id, text, entities), from the Parquet files of its work directory."""
    files = sorted((out / "work" / "annotations").glob("*.parquet"))
    rows = []
    for path in files:
        rows += pq.read_table(path, columns=["doc_id", "text", "entities"]).to_pylist()
    return rows


def inconsistent(rows: list[dict]) -> tuple[int, int]:
    """(short forms used at least twice, of them those whose occurrences' labels differ)."""
    from ner.abbreviations import find_definitions

    used = bad = 0
    for row in rows:
        entities = row["entities"] or []
        for definition in find_definitions(row["text"] or ""):
            if len(definition.occurrences) < 2:
                continue
            labels = {_label(entities, start, end) for start, end in definition.occurrences}
            used += 1
            bad += len(labels) > 1
    return used, bad


def _label(entities: list[dict], start: int, end: int) -> str:
    for e in entities:
        if e["start"] < end and start < e["end"]:
            return e["label"]
    return "O"


def cost_ms_per_document(out: Path, repeat: int = 3) -> tuple[float, float]:
    """(definition finder, whole resolution) in ms per document, on a run's annotations."""
    import numpy as np
    import pyarrow as pa

    from ner.abbreviation_resolution import resolve_abbreviations
    from ner.abbreviations import find_definitions

    files = sorted((out / "work" / "annotations").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f, columns=["text", "entities"]) for f in files)
    texts = [text or "" for text in table.column("text").to_pylist()]
    rows = np.ones(table.num_rows, dtype=bool)
    finder = resolution = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in texts:
            find_definitions(text)
        finder = min(finder, time.perf_counter() - started)
        started = time.perf_counter()
        resolve_abbreviations(table.column("entities"), table.column("text"), rows)
        resolution = min(resolution, time.perf_counter() - started)
    return finder / len(texts) * 1000, resolution / len(texts) * 1000


def stage_cost() -> None:
    from benchmarks.decode_speed import best_time, tokenized_abstracts, with_predictions
    from ner.abbreviation_resolution import DecodeWithAbbreviationsStage
    from ner.decode import SpanDecodeStage

    table = with_predictions(tokenized_abstracts())
    batches = [table.slice(start, 64) for start in range(0, table.num_rows, 64)]
    for stage in (
        SpanDecodeStage(decoding="argmax"),
        DecodeWithAbbreviationsStage(decoding="argmax"),
    ):
        wall, cpu = (seconds / table.num_rows * 1000 for seconds in best_time(stage, batches, 5))
        print(f"{type(stage).__name__:<30} ms per document: wall {wall:.3f}, CPU {cpu:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/train/demo/model")
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/abbreviations"))
    parser.add_argument("--stage-cost", action="store_true", help="only the decoding stage's cost")
    args = parser.parse_args(argv)
    if args.stage_cost:
        stage_cost()
        return 0
    results = {}
    for setting in (False, True):
        out = args.out / ("with" if setting else "without")
        command = evaluate(args.model, args.gold, out, setting)
        rows = annotations(out)
        entities = [e for row in rows for e in row["entities"] or []]
        results[setting] = dict(
            command=shlex.join(command[1:]),
            scores=chemical_scores(out),
            documents=len(rows),
            entities=len(entities),
            via=sum(bool(e.get("via_abbreviation")) for e in entities),
            inconsistent=inconsistent(rows),
        )
    print(f"{'':<34}{'without':>12}{'with':>12}")
    for mode in ("strict", "lenient"):
        for key in ("precision", "recall", "f1"):
            values = [results[s]["scores"][mode][key] for s in (False, True)]
            print(f"{'Chemical ' + mode + ' ' + key:<34}" + "".join(f"{v:>12.4f}" for v in values))
    for label, key in (("documents", "documents"), ("entities (all types)", "entities")):
        print(f"{label:<34}" + "".join(f"{results[s][key]:>12}" for s in (False, True)))
    print(
        f"{'entities via_abbreviation':<34}"
        + "".join(f"{results[s]['via']:>12}" for s in (False, True))
    )
    used = results[False]["inconsistent"][0]
    print(
        f"{'short forms inconsistent':<34}"
        + "".join(f"{results[s]['inconsistent'][1]:>12}" for s in (False, True))
        + f"   (of {used} (document, short form) pairs used at least twice)"
    )
    finder, resolution = cost_ms_per_document(args.out / "without")
    print(f"cost per document: definition finder {finder:.3f} ms, resolution {resolution:.3f} ms")
    for s in (False, True):
        print(f"command: python {results[s]['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

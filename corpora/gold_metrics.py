"""Predicted spans against gold spans: type mapping, one-to-one matching, P/R/F1, PR curves.

Conventions (HunFlair2's): gold types are mapped onto the model's types (or
dropped with ``-``); predictions of model types that no gold type maps to are
dropped, since the corpus does not annotate them; scores are per (model) type
plus the micro average. A prediction matches a gold mention of the same type
and document, each gold mention at most once: *strict* needs equal offsets,
*lenient* each boundary within ±1 character (greedy by overlap). Pure Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from corpora.gold import Span
from plumbing.config import ConfigError, read_yaml_mapping

IGNORE = "-"  # a gold type mapped to this is not scored
MODES = {"strict": 0, "lenient": 1}  # boundary tolerance in characters
MICRO = "micro"


class TypeMapError(ValueError):
    """A type mapping that is malformed or does not cover the corpus' types."""


def parse_type_map(spec: str | Mapping[str, str | None]) -> dict[str, str | None]:
    """``{gold type: model type or "-"}``, given as a mapping or as a YAML file of one.

    ``None`` stands for a gold type that is not scored.
    """
    if isinstance(spec, str):
        try:
            spec = read_yaml_mapping(spec, "type map file")
        except ConfigError as err:
            raise TypeMapError(str(err)) from err
    pairs = [(str(k), IGNORE if v is None else str(v)) for k, v in spec.items()]
    return {gold: None if model == IGNORE else model for gold, model in pairs}


def resolve_type_map(
    type_map: Mapping[str, str | None] | None,
    gold_types: Iterable[str],
    canonical: callable,
) -> dict[str, str | None]:
    """Every gold type mapped to a model type (``canonical`` spells it) or ``None``.

    Without a map, gold types the model knows map to themselves. A gold type left
    unmapped, or a model type the model does not know, is an error naming it.
    """
    resolved: dict[str, str | None] = {}
    for gold, model in (type_map or {}).items():
        if model is not None:
            name = canonical(model)
            if name is None:
                raise TypeMapError(f"type mapping {gold}={model}: the model has no type {model!r}")
            model = name
        resolved[gold] = model
    for gold in sorted(set(gold_types)):
        if gold not in resolved:
            if type_map is None and canonical(gold) is not None:
                resolved[gold] = canonical(gold)
                continue
            raise TypeMapError(
                f"gold type {gold!r} is not mapped: add {gold}=<model type> "
                f"or {gold}={IGNORE} (not scored) to the type mapping"
            )
    return resolved


def project(
    gold: Iterable[Span], predicted: Iterable[Span], type_map: Mapping[str, str | None]
) -> tuple[list[Span], list[Span]]:
    """Gold spans under their model types (unscored ones dropped), and the scored predictions."""
    scored = {model for model in type_map.values() if model is not None}
    mapped = [_retype(s, type_map[s.type]) for s in gold if type_map.get(s.type) is not None]
    return mapped, [p for p in predicted if p.type in scored]


def _retype(span: Span, kind: str) -> Span:
    return Span(span.doc_id, span.start, span.end, kind, span.text, span.score)


def match(gold: Sequence[Span], predicted: Sequence[Span], tolerance: int = 0) -> list[bool]:
    """Per prediction: whether it matches a gold span one-to-one (same document and type).

    Pairs are candidates when both boundaries are within ``tolerance`` characters;
    they are taken greedily by overlap, then closeness, then prediction score, so
    each gold span and each prediction is used at most once.
    """
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for g, span in enumerate(gold):
        by_key[span.doc_id, span.type].append(g)
    pairs = []
    for p, pred in enumerate(predicted):
        for g in by_key.get((pred.doc_id, pred.type), ()):
            span = gold[g]
            ds, de = abs(span.start - pred.start), abs(span.end - pred.end)
            if ds <= tolerance and de <= tolerance:
                overlap = min(span.end, pred.end) - max(span.start, pred.start)
                pairs.append((-overlap, ds + de, -pred.score, p, g))
    pairs.sort()
    flags = [False] * len(predicted)
    used: set[int] = set()
    for *_, p, g in pairs:
        if not flags[p] and g not in used:
            flags[p] = True
            used.add(g)
    return flags


@dataclass
class Counts:
    tp: int = 0
    gold: int = 0
    predicted: int = 0

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "gold": self.gold,
            "predicted": self.predicted,
        }


def score(gold: Sequence[Span], predicted: Sequence[Span]) -> dict[str, dict[str, Counts]]:
    """``{mode: {type or "micro": Counts}}`` for strict and lenient matching."""
    types = sorted({s.type for s in gold} | {p.type for p in predicted})
    result: dict[str, dict[str, Counts]] = {}
    for mode, tolerance in MODES.items():
        flags = match(gold, predicted, tolerance)
        counts = {kind: Counts() for kind in types}
        for span in gold:
            counts[span.type].gold += 1
        for pred, hit in zip(predicted, flags, strict=True):
            counts[pred.type].predicted += 1
            counts[pred.type].tp += hit
        micro = Counts(
            *(sum(getattr(c, f) for c in counts.values()) for f in Counts.__annotations__)
        )
        result[mode] = {**counts, MICRO: micro}
    return result


def pr_curve(gold: Sequence[Span], predicted: Sequence[Span]) -> dict[str, list[dict]]:
    """Per type, precision and recall (strict and lenient) keeping predictions with score >= t.

    One row per distinct score t, in decreasing order of t (so recall never
    decreases down the rows). Matches are made once over all predictions: for
    strict matching that is exact, since decoded spans of a document do not
    overlap and so cannot compete for a gold span; for lenient matching it is a
    close approximation.
    """
    flags = {mode: match(gold, predicted, tol) for mode, tol in MODES.items()}
    curves: dict[str, list[dict]] = {}
    for kind in sorted({s.type for s in gold} | {p.type for p in predicted}):
        n_gold = sum(s.type == kind for s in gold)
        order = sorted(
            (i for i, p in enumerate(predicted) if p.type == kind),
            key=lambda i: -predicted[i].score,
        )
        rows: list[dict] = []
        tp = dict.fromkeys(MODES, 0)
        for rank, i in enumerate(order, start=1):
            for mode in MODES:
                tp[mode] += flags[mode][i]
            last = rank == len(order) or predicted[order[rank]].score != predicted[i].score
            if last:  # ties enter together: a threshold keeps all of them
                row = {"threshold": float(predicted[i].score), "predicted": rank}
                for mode in MODES:
                    row[f"{mode}_tp"] = tp[mode]
                    row[f"{mode}_precision"] = tp[mode] / rank
                    row[f"{mode}_recall"] = tp[mode] / n_gold if n_gold else 0.0
                rows.append(row)
        curves[kind] = rows
    return curves


def threshold_for_precision(
    rows: Sequence[dict], target: float = 0.9, mode: str = "strict"
) -> dict | None:
    """The row with the lowest threshold whose precision is at least ``target`` (or None)."""
    reached = [row for row in rows if row[f"{mode}_precision"] >= target]
    return min(reached, key=lambda row: row["threshold"]) if reached else None


def markdown_table(scores: Mapping[str, Mapping[str, Counts]]) -> str:
    """Strict and lenient P/R/F1 per type, and the micro average, as a Markdown table."""
    lines = [
        "| type | strict P | strict R | strict F1 | lenient P | lenient R | lenient F1 | gold | predicted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    strict, lenient = scores["strict"], scores["lenient"]
    for kind in [k for k in strict if k != MICRO] + [MICRO]:
        s, n = strict[kind], lenient[kind]
        name = "**all (micro)**" if kind == MICRO else kind
        lines.append(
            f"| {name} | {s.precision:.4f} | {s.recall:.4f} | {s.f1:.4f} | {n.precision:.4f} "
            f"| {n.recall:.4f} | {n.f1:.4f} | {s.gold} | {s.predicted} |"
        )
    return "\n".join(lines)


def thresholds_table(curves: Mapping[str, Sequence[dict]], target: float = 0.9) -> str:
    """Per type, the lowest score threshold reaching ``target`` strict precision, as Markdown."""
    lines = [
        f"| type | lowest threshold with precision >= {target:g} | precision | recall |",
        "|---|---:|---:|---:|",
    ]
    for kind, rows in curves.items():
        row = threshold_for_precision(rows, target)
        if row is None:
            lines.append(f"| {kind} | not reached | | |")
        else:
            lines.append(
                f"| {kind} | {row['threshold']:.4f} | {row['strict_precision']:.4f} "
                f"| {row['strict_recall']:.4f} |"
            )
    return "\n".join(lines)

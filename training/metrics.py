"""Entity-level scores with seqeval, plus token accuracy, in one flat dict.

Two seqeval modes are reported: the default (conlleval-compatible, lenient about
ill-formed chunks) and strict IOB2, where a mention counts only if its B-/I-
tags are exactly right. Model selection uses the default mode's micro F1.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from ner.labels import ENTITY_TYPES


def entity_report(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], strict: bool = False
) -> dict[str, dict[str, float]]:
    """Per-type and micro-averaged precision, recall, F1 and support."""
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    for i, (gold, pred) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted")
    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        [list(t) for t in true_tags],
        [list(p) for p in pred_tags],
        output_dict=True,
        zero_division=0,
        **kwargs,
    )
    scores = {}
    for name in (*ENTITY_TYPES, "micro avg"):
        row = report.get(name, {})
        scores[name] = {
            "precision": float(row.get("precision", 0.0)),
            "recall": float(row.get("recall", 0.0)),
            "f1": float(row.get("f1-score", 0.0)),
            "support": int(row.get("support", 0)),
        }
    return scores


def token_accuracy(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """Share of word-level tags predicted exactly."""
    pairs = [
        (g, p)
        for gold, pred in zip(true_tags, pred_tags, strict=True)
        for g, p in zip(gold, pred, strict=True)
    ]
    return sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0


def evaluation_metrics(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], prefix: str = "devel"
) -> dict[str, float]:
    """Flat metrics for ``ray.train.report``: ``devel_f1``, ``devel_Cell_f1``, ``devel_strict_f1``..."""
    metrics: dict[str, float] = {}
    for mode, strict in (("", False), ("strict_", True)):
        report = entity_report(true_tags, pred_tags, strict=strict)
        for key in ("precision", "recall", "f1"):
            metrics[f"{prefix}_{mode}{key}"] = report["micro avg"][key]
        for kind in ENTITY_TYPES:
            for key in ("precision", "recall", "f1"):
                metrics[f"{prefix}_{mode}{kind}_{key}"] = report[kind][key]
            metrics[f"{prefix}_{kind}_support"] = report[kind]["support"]
    metrics[f"{prefix}_token_accuracy"] = token_accuracy(true_tags, pred_tags)
    metrics[f"{prefix}_sentences"] = len(true_tags)
    return metrics


def per_type_table(metrics: dict[str, float], prefix: str = "devel") -> str:
    """A Markdown table of per-type scores (default and strict F1) from flat metrics."""
    lines = [
        "| type | precision | recall | F1 | strict F1 | support |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ENTITY_TYPES:
        lines.append(
            f"| {kind} | {metrics[f'{prefix}_{kind}_precision']:.4f} "
            f"| {metrics[f'{prefix}_{kind}_recall']:.4f} | {metrics[f'{prefix}_{kind}_f1']:.4f} "
            f"| {metrics[f'{prefix}_strict_{kind}_f1']:.4f} | {int(metrics[f'{prefix}_{kind}_support'])} |"
        )
    lines.append(
        f"| **all (micro)** | {metrics[f'{prefix}_precision']:.4f} | {metrics[f'{prefix}_recall']:.4f} "
        f"| {metrics[f'{prefix}_f1']:.4f} | {metrics[f'{prefix}_strict_f1']:.4f} "
        f"| {sum(int(metrics[f'{prefix}_{k}_support']) for k in ENTITY_TYPES)} |"
    )
    return "\n".join(lines)

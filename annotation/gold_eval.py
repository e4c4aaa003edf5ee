"""Score the annotation job against a gold corpus, through the job's own path.

The gold documents are written as Parquet input (``pmid``, ``title``,
``abstract``), annotated by :func:`annotation.run.run_annotate` exactly as
jobs.annotate would (``text_columns=[title, abstract]``, separator ``" "``, so
offsets are into ``title + " " + abstract``), and the output's ``entities`` are
matched against the gold (:mod:`corpora.gold_metrics`). What is scored is what users
get. The reports (Markdown, JSON, CSV, PNG) are written by :func:`write_reports`.
:class:`EvaluateConfig` is jobs.evaluate's config.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

from annotation.config import AnnotateConfig
from annotation.run import RunSummary, run_annotate
from corpora.gold import GOLD_FORMATS, GoldDocument, Span
from corpora.gold_metrics import (
    MICRO,
    Counts,
    markdown_table,
    threshold_for_precision,
    thresholds_table,
)
from corpora.pubtator import SEPARATOR, write_parquet
from ner import columns as C
from ner.viterbi import DECODINGS
from plumbing.config import ConfigError, JobConfig, load_config

ID, TITLE, ABSTRACT = "pmid", "title", "abstract"  # corpora.pubtator.write_parquet's columns
PRECISION_TARGET = 0.9


class EvaluateConfig(JobConfig):
    """Settings of jobs.evaluate: a CRAFT split, or a gold corpus through the annotation job."""

    model: str = Field(description="model directory or hub id")
    split: str = Field("devel", description="CRAFT: train, devel or test")
    data_dir: str | None = Field(
        None, description="CRAFT-IOB folder (only the scored split is needed)"
    )
    out: str | None = Field(
        None, description="output folder (default: <model>/eval-<split or gold file>)"
    )
    batch_size: int = Field(64, description="CRAFT: sentences per batch", ge=1)
    max_sentences: int | None = Field(None, description="CRAFT: only the first N sentences")
    spans: bool = Field(
        False, description="CRAFT: also score spans through the annotation job, in <out>/spans"
    )
    update_model_card: bool = Field(
        False,
        description="CRAFT devel: write each type's lowest score threshold reaching 0.9 "
        "precision into the model directory's README.md",
    )
    gold: str | None = Field(None, description="gold corpus: PubTator file, or BioC XML (.xml)")
    format: Literal[("auto", *GOLD_FORMATS)] = Field("auto", description="gold file format")
    types: Any = Field(
        None,
        description="gold type -> model type or '-' (not scored): a mapping "
        "{Chemical: Chemical, Disease: '-'}, or a YAML file of one",
    )
    annotate_config: str | None = Field(
        None, description="jobs.annotate YAML for the annotation run"
    )
    decoding: Literal[DECODINGS] | None = Field(
        None, description="for spans and word tags alike (default: annotate_config's, else viterbi)"
    )
    annotate: dict[str, Any] = Field(
        {},
        description="jobs.annotate keys for the annotation run, over annotate_config and "
        "decoding: annotate.KEY=VALUE",
    )

    @property
    def overrides(self) -> dict[str, Any]:
        """The annotation run's keys over its config file: ``annotate.*``, then ``decoding``.

        ``decoding`` goes in only when given: a default here would hide the file's.
        """
        return ({"decoding": self.decoding} if self.decoding else {}) | self.annotate

    @field_validator("types")
    @classmethod
    def _mapping_or_file(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | dict):
            return value
        raise ConfigError(f"types: expected a mapping or a YAML file, got {value!r}")

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateConfig:
        if self.update_model_card and (self.gold or self.split != "devel"):
            raise ConfigError("update_model_card scores the CRAFT devel split; drop gold")
        load_config(AnnotateConfig, self.annotate_config, self.overrides)  # its errors, now
        return self


@dataclass
class GoldRun:
    """The annotation of a gold corpus: predictions by document, and the run's summary."""

    predictions: list[Span]
    summary: RunSummary
    not_ok: dict[str, str]  # doc_id -> status, for documents without an ``ok`` annotation


def gold_annotate_config(
    model: str,
    work_dir: str | Path,
    config_path: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> AnnotateConfig:
    """jobs.annotate's config (a YAML file and overrides) for the gold documents.

    Input, output, model, id and text columns and the separator are fixed here:
    they are what makes the offsets comparable with the gold's.
    """
    config = load_config(AnnotateConfig, config_path, overrides)
    work = Path(work_dir)
    config.input = [str(work / "input")]
    config.output = str(work / "annotations")
    config.model = model
    config.id_column = ID
    config.text_columns = [TITLE, ABSTRACT]
    config.separator = SEPARATOR
    config.passthrough = []
    config.run_id = ""  # always a fresh run over the gold documents
    return config


def annotate_gold(documents: Sequence[GoldDocument], config: AnnotateConfig) -> GoldRun:
    """Annotate the gold documents with the annotation job and read its predicted spans."""
    rows = [{ID: d.doc_id, TITLE: d.title, ABSTRACT: d.abstract} for d in documents]
    write_parquet(rows, config.input[0])
    summary = run_annotate(config)
    by_id = {d.doc_id: d for d in documents}
    predictions: list[Span] = []
    not_ok: dict[str, str] = {}
    seen: set[str] = set()
    for path in summary.files:
        table = pq.read_table(path, columns=[C.DOC_ID, C.ENTITIES, C.STATUS])
        for row in table.to_pylist():
            doc = by_id[row[C.DOC_ID]]
            seen.add(doc.doc_id)
            if row[C.STATUS] != C.STATUS_OK:
                not_ok[doc.doc_id] = row[C.STATUS]
            # The job skips an empty title, so its abstract starts at 0, not at 1.
            shift = len(SEPARATOR) if doc.title == "" and doc.abstract else 0
            for e in row[C.ENTITIES]:
                predictions.append(
                    Span(
                        doc.doc_id,
                        e["start"] + shift,
                        e["end"] + shift,
                        e["label"],
                        e["text"],
                        float(e["score"]),
                    )
                )
    for doc in documents:  # a rejected document (too long) reaches only _rejected/
        if doc.doc_id not in seen:
            not_ok[doc.doc_id] = C.STATUS_REJECTED
    return GoldRun(predictions, summary, not_ok)


def write_reports(
    out: Path,
    scores: Mapping[str, Mapping[str, Counts]],
    curves: Mapping[str, Sequence[dict]],
    title: str,
    extra: Mapping | None = None,
) -> list[Path]:
    """scores.md, metrics.json, pr_curve.csv, pr_curve.json, per_type_f1.png, pr_curve.png."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(scores)
    (out / "scores.md").write_text(f"# {title}\n\n{table}\n", encoding="utf-8")
    thresholds = {
        kind: threshold_for_precision(rows, PRECISION_TARGET) for kind, rows in curves.items()
    }
    record = {
        **(extra or {}),
        "scores": {
            mode: {kind: c.as_dict() for kind, c in by_type.items()}
            for mode, by_type in scores.items()
        },
        f"threshold_for_precision_{PRECISION_TARGET:g}": thresholds,
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "pr_curve.json").write_text(json.dumps(curves, indent=1) + "\n", encoding="utf-8")
    fields = ["type", "threshold", "predicted"] + [
        f"{mode}_{key}" for mode in ("strict", "lenient") for key in ("tp", "precision", "recall")
    ]
    with open(out / "pr_curve.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for kind, rows in curves.items():
            for row in rows:
                writer.writerow({"type": kind, **row})
    plot_scores(scores, out / "per_type_f1.png", title)
    plot_curves(curves, out / "pr_curve.png", title)
    return [out / n for n in ("scores.md", "metrics.json", "pr_curve.csv", "pr_curve.json")] + [
        out / "per_type_f1.png",
        out / "pr_curve.png",
    ]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on batch machines
    import matplotlib.pyplot as plt

    return plt


def plot_scores(scores: Mapping[str, Mapping[str, Counts]], path: Path, title: str) -> None:
    """Grouped bars: strict and lenient F1 per type and micro-averaged."""
    plt = _pyplot()
    kinds = [k for k in scores["strict"] if k != MICRO] + [MICRO]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(kinds) + 2), 4))
    xs = range(len(kinds))
    for shift, mode in ((-0.2, "strict"), (0.2, "lenient")):
        values = [scores[mode][k].f1 for k in kinds]
        ax.bar([x + shift for x in xs], values, width=0.4, label=f"{mode} F1")
        for x, value in zip(xs, values, strict=True):
            ax.text(x + shift, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs), kinds)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("entity F1")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(curves: Mapping[str, Sequence[dict]], path: Path, title: str) -> None:
    """Strict precision against recall per type, thresholds swept over the span scores."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for kind, rows in curves.items():
        if rows:
            ax.plot(
                [r["strict_recall"] for r in rows],
                [r["strict_precision"] for r in rows],
                label=kind,
                marker=".",
                markersize=3,
            )
    ax.axhline(PRECISION_TARGET, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (strict)")
    ax.set_ylabel("precision (strict)")
    ax.set_title(f"{title}\nprecision-recall over span score thresholds", fontsize=10)
    if any(curves.values()):
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def effective_decoding(annotate_config: str | None, overrides: Mapping[str, Any]) -> str:
    """The decoding the annotation run's spans use, so that CRAFT's word tags use it too."""
    return load_config(AnnotateConfig, annotate_config, overrides).decoding


def model_card_section(split: str, curves) -> str:
    """The model card's "Score thresholds" section: each type's 0.9-precision threshold."""
    return (
        "## Score thresholds\n\n"
        f"Per type, the lowest span score at which {split} precision (strict spans, "
        "through the annotation job) reaches 0.9, written by `jobs.evaluate "
        "update_model_card=true`; spans scoring below it can be dropped.\n\n"
        + thresholds_table(curves)
        + "\n"
    )

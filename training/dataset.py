"""Build the training dataset: CRAFT-IOB splits plus the augmented training copy.

The result is a ``DatasetDict`` (train = original + augmented, devel, test where
present), written as one Parquet file per split with per-split statistics
(``jobs.build_dataset``); the training job reads those files (:func:`load_data`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, concatenate_datasets

from corpora.corpus import InputError, resolve_filesystem
from ner.labels import ENTITY_TYPES, LABELS, mention_spans
from training.augment import DEFAULT_RATE, AugmentStats, augment, build_lexicons
from training.craft import FEATURES, SplitData, read_splits, resolve_data_dir, to_dataset

STATS_FILE = "stats.json"


@dataclass
class SplitStats:
    """What the build command prints for one split."""

    sentences: int
    tokens: int
    mentions: dict[str, int]
    iob2_fixes: int = 0
    replaced_share: dict[str, float] | None = None

    @classmethod
    def of(cls, split: SplitData, augment_stats: AugmentStats | None = None) -> SplitStats:
        mentions: Counter = Counter()
        for sentence in split.sentences:
            mentions.update(kind for _, _, kind in mention_spans(sentence.tags))
        share = None
        if augment_stats is not None:
            share = {kind: round(augment_stats.share(kind), 4) for kind in ENTITY_TYPES}
        return cls(
            sentences=len(split.sentences),
            tokens=sum(len(s.tokens) for s in split.sentences),
            mentions={kind: mentions[kind] for kind in ENTITY_TYPES},
            iob2_fixes=split.iob2_fixes,
            replaced_share=share,
        )


@dataclass
class DatasetBuild:
    """The built dataset and its statistics, keyed by split (``train-augmented`` included)."""

    dataset: DatasetDict
    stats: dict[str, SplitStats] = field(default_factory=dict)


def build_dataset(
    data_dir: str | os.PathLike | None = None,
    ontology_dir: str | os.PathLike | None = None,
    lexicon_files: dict[str, str] | None = None,
    rate: float = DEFAULT_RATE,
    seed: int = 42,
    augment_train: bool = True,
) -> DatasetBuild:
    """Read CRAFT-IOB, augment a copy of train, and gather statistics."""
    root = resolve_data_dir(data_dir)
    splits = read_splits(root)
    if ontology_dir is None:
        # CRAFT-IOB and the ontologies sit side by side in the shared data folder.
        ontology_dir = root.parent / "ontologies"
    stats = {name: SplitStats.of(split) for name, split in splits.items()}
    datasets = {
        name: to_dataset(split.sentences, name, "original") for name, split in splits.items()
    }
    if augment_train:
        lexicons = build_lexicons(splits["train"].sentences, ontology_dir, lexicon_files)
        sentences, augment_stats = augment(splits["train"].sentences, lexicons, rate, seed)
        copy = SplitData("train-augmented", sentences)
        stats["train-augmented"] = SplitStats.of(copy, augment_stats)
        datasets["train"] = concatenate_datasets(
            [datasets["train"], to_dataset(sentences, "train-aug", "augmented")]
        )
    return DatasetBuild(DatasetDict(datasets), stats)


def write_dataset(build: DatasetBuild, out_dir: str | os.PathLike) -> dict[str, Path]:
    """One ``<split>.parquet`` per split plus ``stats.json``; returns the Parquet paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, split in build.dataset.items():
        paths[name] = out / f"{name}.parquet"
        split.to_parquet(str(paths[name]))
    stats = {name: vars(s) for name, s in build.stats.items()}
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return paths


SPLITS = ("train", "devel")


def split_paths(dataset_dir: str) -> dict[str, str]:
    """Where :func:`write_dataset` puts the training and devel splits of a dataset folder."""
    return {split: f"{str(dataset_dir).rstrip('/')}/{split}.parquet" for split in SPLITS}


def read_split(path: str) -> pa.Table:
    """One split written by :func:`write_dataset` (local path or URI), its labels checked.

    The tags are class ids; a folder built with another label set (an older build, a
    hand-made file) would be read as the wrong types, so its names must be ours.
    """
    filesystem, where = resolve_filesystem(path)
    try:
        table = pq.read_table(where, filesystem=filesystem)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing") from err
    missing = {"tokens", "ner_tags", "source"} - set(table.column_names)
    if missing:
        raise InputError(f"{path} is not a split of jobs.build_dataset: no {sorted(missing)}")
    features = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}"))
    names = features.get("info", {}).get("features", {}).get("ner_tags", {}).get("feature", {})
    if names.get("names") != list(LABELS):
        raise InputError(f"{path} has other tags than {list(LABELS)}: rebuild the dataset")
    return table


def load_data(cfg) -> dict[str, dict[str, list]]:
    """Train (original + augmented, or original only) and devel of a TrainConfig as columns.

    Read from the Parquet splits that ``jobs.build_dataset`` writes to ``cfg.dataset``,
    so that a run trains on exactly the dataset whose statistics were printed.
    ``max_train_sentences`` takes a seeded sample of train (so original and
    augmented rows both appear; the same permutation as ``datasets``' ``shuffle``);
    ``max_eval_sentences`` the first devel sentences, so every run scores the same subset.
    """
    paths = split_paths(cfg.dataset)
    try:
        tables = {split: read_split(path) for split, path in paths.items()}
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no training dataset at {cfg.dataset} ({err}): build it with "
            f"python -m jobs.build_dataset out={cfg.dataset}"
        ) from err
    if not cfg.use_augmented:
        train = tables["train"]
        tables["train"] = train.filter(pc.equal(train["source"], "original"))
    columns = {}
    for split, limit in (("train", cfg.max_train_sentences), ("devel", cfg.max_eval_sentences)):
        table = tables[split]
        if limit is not None and limit < table.num_rows:
            rows = np.arange(limit)
            if split == "train":
                rows = np.random.default_rng(cfg.seed).permutation(table.num_rows)[:limit]
            table = table.take(rows)
        columns[split] = {name: table[name].to_pylist() for name in ("tokens", "ner_tags")}
    return columns


def load_split(path: str | os.PathLike) -> Dataset:
    """Read back one split written by :func:`write_dataset`, with its ClassLabel features."""
    return Dataset.from_parquet(str(path), features=FEATURES)


def format_stats(stats: dict[str, SplitStats]) -> str:
    """A plain-text table of the statistics, one block per split."""
    header = f"{'split':<16}{'sentences':>10}{'tokens':>10}{'fixes':>7}  " + "".join(
        f"{kind:>10}" for kind in ENTITY_TYPES
    )
    lines = [header, "-" * len(header)]
    for name, s in stats.items():
        lines.append(
            f"{name:<16}{s.sentences:>10,}{s.tokens:>10,}{s.iob2_fixes:>7}  "
            + "".join(f"{s.mentions[k]:>10,}" for k in ENTITY_TYPES)
        )
        if s.replaced_share is not None:
            lines.append(
                f"{'  replaced':<16}{'':>10}{'':>10}{'':>7}  "
                + "".join(f"{s.replaced_share[k]:>10.1%}" for k in ENTITY_TYPES)
            )
    return "\n".join(lines)

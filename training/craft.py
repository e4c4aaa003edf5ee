"""Reader for CRAFT-IOB files: ``token<TAB>tag`` a line, a blank line between sentences.

Short codes (``GGP``, ``CHEBI``...) become the project's full type names and
tags are normalised to IOB2. Anything malformed is an error naming the file and
line, because a silently skipped line shifts every tag after it.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from ner.labels import LABELS, canonical_tag, to_iob2

SPLITS = ("train", "devel", "test")
# test.tsv is held out in this project's data; the split is optional everywhere.
OPTIONAL_SPLITS = ("test",)
DATA_DIR_ENV = "CRAFT_IOB_DIR"
DATA_SOURCE_HINT = (
    "CRAFT-IOB comes from the public repository cambridgeltl/MTL-Bioinformatics-2016, "
    "folder data/CRAFT-IOB (train.tsv, devel.tsv, test.tsv); pass data_dir=DIR or set "
    f"{DATA_DIR_ENV} to the folder holding them"
)
_PROJECT_ROOT = Path(__file__).resolve().parents[1]

FEATURES = Features(
    {
        "id": Value("string"),
        "tokens": Sequence(Value("string")),
        "ner_tags": Sequence(ClassLabel(names=list(LABELS))),
        "source": Value("string"),
    }
)


class CraftFormatError(ValueError):
    """A malformed line in a CRAFT-IOB file."""

    def __init__(self, path: Path, line_no: int, reason: str):
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path, self.line_no, self.reason = path, line_no, reason


class CraftDataMissingError(FileNotFoundError):
    """The CRAFT-IOB folder or one of its required files is not there."""


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]


@dataclass
class SplitData:
    """One split as read from disk, with the count of IOB2 repairs made."""

    name: str
    sentences: list[Sentence] = field(default_factory=list)
    iob2_fixes: int = 0


def resolve_data_dir(
    data_dir: str | os.PathLike | None = None, required: str = "train.tsv"
) -> Path:
    """Find the CRAFT-IOB folder: the argument, then $CRAFT_IOB_DIR, then the defaults.

    Defaults are ``data/craft-iob`` and ``../shared/data/craft-iob``, tried
    against the working directory and then the project root. A folder counts when
    it holds ``required`` (training needs train.tsv; scoring one split, that split).
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not (path / required).is_file():
            raise CraftDataMissingError(f"no {required} in {path}. {DATA_SOURCE_HINT}")
        return path
    candidates = []
    for base in (Path.cwd(), _PROJECT_ROOT):
        candidates += [base / "data" / "craft-iob", base.parent / "shared" / "data" / "craft-iob"]
    for path in candidates:
        if (path / required).is_file():
            return path
    tried = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise CraftDataMissingError(f"CRAFT-IOB data not found (tried {tried}). {DATA_SOURCE_HINT}")


def read_iob_file(path: str | os.PathLike, split: str | None = None) -> SplitData:
    """Read one CRAFT-IOB file into sentences of canonical IOB2 tags."""
    path = Path(path)
    data = SplitData(name=split or path.stem)
    tokens: list[str] = []
    tags: list[str] = []

    def close_sentence() -> None:
        if tokens:
            fixed, fixes = to_iob2(tags)
            data.sentences.append(Sentence(list(tokens), fixed))
            data.iob2_fixes += fixes
            tokens.clear()
            tags.clear()

    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                close_sentence()
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CraftFormatError(
                    path, line_no, f"expected 'token<TAB>tag', got {len(fields) - 1} tabs: {line!r}"
                )
            token, raw_tag = fields
            if not token.strip():
                raise CraftFormatError(path, line_no, "empty token")
            tag = canonical_tag(raw_tag)
            if tag is None:
                raise CraftFormatError(path, line_no, f"unknown tag {raw_tag!r}")
            tokens.append(token)
            tags.append(tag)
    close_sentence()
    return data


@functools.cache
def _notice_absent(path: str, split: str) -> None:
    # Once per process: the quickstart reads the splits twice (dataset, training).
    print(f"notice: {path} not found; the {split} split is absent", file=sys.stderr)


def read_splits(data_dir: str | os.PathLike | None = None) -> dict[str, SplitData]:
    """Read every split present; a missing optional split is skipped with a notice."""
    root = resolve_data_dir(data_dir)
    splits: dict[str, SplitData] = {}
    for split in SPLITS:
        path = root / f"{split}.tsv"
        if not path.is_file():
            if split in OPTIONAL_SPLITS:
                _notice_absent(str(path), split)
                continue
            raise CraftDataMissingError(f"missing {path}. {DATA_SOURCE_HINT}")
        splits[split] = read_iob_file(path, split)
    return splits


def to_dataset(sentences: list[Sentence], id_prefix: str, source: str) -> Dataset:
    """Sentences as a ``datasets.Dataset`` with the project's features."""
    return Dataset.from_dict(
        {
            "id": [f"{id_prefix}-{i:05d}" for i in range(len(sentences))],
            "tokens": [s.tokens for s in sentences],
            "ner_tags": [s.tags for s in sentences],
            "source": [source] * len(sentences),
        },
        features=FEATURES,
    )


def to_dataset_dict(splits: dict[str, SplitData]) -> DatasetDict:
    """All splits, unaugmented, each row's ``source`` set to ``original``."""
    return DatasetDict(
        {name: to_dataset(data.sentences, name, "original") for name, data in splits.items()}
    )

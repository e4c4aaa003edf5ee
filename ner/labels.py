"""The project's label scheme: six CRAFT entity types, BIO tags, stable ids.

Every model this project trains or loads speaks this scheme. Published CRAFT
models spell the types differently (``B-GENE``, ``B-GGP``), so configs from
elsewhere are mapped onto it by :func:`map_model_labels` or rejected with the
unknown tags named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Full type name -> the CRAFT short code it comes from. "Gene" is the CRAFT GO
# (cellular component) layer, following the published CRAFT models.
CRAFT_CODES: dict[str, str] = {
    "Chemical": "CHEBI",
    "Cell": "CL",
    "Protein": "GGP",
    "Gene": "GO",
    "Sequence": "SO",
    "Taxon": "Taxon",
}
ENTITY_TYPES: tuple[str, ...] = tuple(CRAFT_CODES)
CODE_TO_TYPE: dict[str, str] = {code: name for name, code in CRAFT_CODES.items()}

OUTSIDE = "O"
# Order is part of the contract: ids are stored in datasets and model configs.
LABELS: tuple[str, ...] = (OUTSIDE,) + tuple(
    f"{prefix}-{name}" for name in ENTITY_TYPES for prefix in ("B", "I")
)
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
LABEL2ID: dict[str, int] = {label: i for i, label in ID2LABEL.items()}

# Spellings accepted for a type, case-insensitively: full names and CRAFT codes.
_TYPE_ALIASES: dict[str, str] = {
    **{name.lower(): name for name in ENTITY_TYPES},
    **{code.lower(): name for code, name in CODE_TO_TYPE.items()},
}


class UnknownLabelError(ValueError):
    """A tag that does not map onto the project's scheme."""

    def __init__(self, tags: Iterable[str], where: str = ""):
        self.tags = sorted(set(tags))
        place = f" in {where}" if where else ""
        super().__init__(
            f"unknown tag(s){place}: {', '.join(repr(t) for t in self.tags)}; "
            f"expected O or B-/I- followed by one of {', '.join(ENTITY_TYPES)} "
            f"(or a CRAFT code: {', '.join(CODE_TO_TYPE)})"
        )


def canonical_type(name: str) -> str | None:
    """Full type name for a type spelling or CRAFT code, or None if unknown."""
    return _TYPE_ALIASES.get(name.strip().lower())


def canonical_tag(tag: str) -> str | None:
    """Map a tag in any accepted spelling (``B-GGP``, ``I-GENE``, ``b_chemical``) to ours."""
    tag = tag.strip()
    if tag.upper() == OUTSIDE:
        return OUTSIDE
    if len(tag) < 3 or tag[1] not in "-_" or tag[0].upper() not in "BI":
        return None
    name = canonical_type(tag[2:])
    return f"{tag[0].upper()}-{name}" if name else None


def map_model_labels(id2label: Mapping[int | str, str]) -> dict[int, str]:
    """Translate a model config's ``id2label`` into this scheme, keeping its ids.

    Raises :class:`UnknownLabelError` naming every tag that does not map, so
    loading a model trained on another corpus fails loudly instead of emitting
    nonsense labels.
    """
    mapped: dict[int, str] = {}
    unknown = []
    for raw_id, tag in id2label.items():
        label = canonical_tag(tag)
        if label is None:
            unknown.append(tag)
        else:
            mapped[int(raw_id)] = label
    if unknown:
        raise UnknownLabelError(unknown, where="the model's id2label")
    return mapped


def entity_type(label: str) -> str | None:
    """The entity type of a canonical tag, None for ``O``."""
    return None if label == OUTSIDE else label[2:]


def to_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """Normalise canonical tags to IOB2: an ``I-X`` that opens a mention becomes ``B-X``.

    Returns the fixed tags and how many were changed.
    """
    fixed: list[str] = []
    fixes = 0
    previous = OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and entity_type(previous) != tag[2:]:
            tag = "B-" + tag[2:]
            fixes += 1
        fixed.append(tag)
        previous = tag
    return fixed, fixes


def is_valid_iob2(tags: Sequence[str]) -> bool:
    """True when every ``I-X`` continues a mention of type X."""
    return to_iob2(tags)[1] == 0 and all(t in LABEL2ID for t in tags)


def mention_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, end, type)`` token spans, end exclusive, of IOB2 tags."""
    spans: list[tuple[int, int, str]] = []
    start = None
    kind = None
    for i, tag in enumerate(list(tags) + [OUTSIDE]):
        continues = tag.startswith("I-") and tag[2:] == kind
        if start is not None and not continues:
            spans.append((start, i, kind))
            start = kind = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, kind = i, tag[2:]
    return spans


def type_thresholds(min_score: Mapping[str, float]) -> np.ndarray | None:
    """Per-type thresholds in ENTITY_TYPES order (0 where unset); None when none is set."""
    unknown = sorted(set(min_score) - set(ENTITY_TYPES))
    if unknown:
        raise ValueError(
            f"min_score names unknown type(s) {', '.join(unknown)}; "
            f"types are {', '.join(ENTITY_TYPES)}"
        )
    if not any(min_score.values()):
        return None
    return np.array([float(min_score.get(t, 0.0)) for t in ENTITY_TYPES])

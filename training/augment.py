"""Entity-replacement augmentation, as used for the published CRAFT models.

A copy of the training split has a share of its entity mentions (20% by
default, drawn per mention with a seeded RNG) replaced by another surface form
of the same type. Surface forms come from per-type lexicons: the distinct
mentions of the training split for every type, plus Cell Ontology and Sequence
Ontology names and EXACT synonyms for Cell and Sequence. Replacements are
tokenised the way CRAFT-IOB is (punctuation split off) and re-tagged B-/I-.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ner.labels import ENTITY_TYPES, mention_spans
from training.craft import Sentence

DEFAULT_RATE = 0.2
# Types that get ontology terms on top of training mentions, with the OBO file
# and the id prefix that marks the ontology's own terms (imports are skipped).
ONTOLOGY_SOURCES: dict[str, tuple[str, str]] = {
    "Cell": ("CL.obo", "CL"),
    "Sequence": ("SO.obo", "SO"),
}

# CRAFT-IOB splits every punctuation character off as its own token.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_EXACT_SYNONYM_RE = re.compile(r'^synonym:\s*"((?:[^"\\]|\\.)*)"\s+EXACT\b')
_NAME_RE = re.compile(r"^name:\s*(.+?)\s*$")

SurfaceForm = tuple[str, ...]
Lexicon = dict[str, list[SurfaceForm]]


def tokenize(text: str) -> SurfaceForm:
    """Split text the way CRAFT-IOB does: words, and each punctuation mark alone."""
    return tuple(_TOKEN_RE.findall(text))


def read_obo_terms(path: str | os.PathLike, id_prefix: str) -> list[str]:
    """Names and EXACT synonyms of the non-obsolete ``[Term]`` stanzas with ``id_prefix``."""
    terms: list[str] = []

    def flush(stanza: dict) -> None:
        ours = stanza.get("is_term") and stanza.get("id", "").startswith(id_prefix + ":")
        if ours and not stanza.get("obsolete"):
            terms.extend(stanza.get("labels", []))

    stanza: dict = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if line.startswith("["):
                flush(stanza)
                stanza = {"is_term": line == "[Term]", "labels": []}
            elif line.startswith("id:"):
                stanza["id"] = line[3:].strip()
            elif line == "is_obsolete: true":
                stanza["obsolete"] = True
            elif m := _NAME_RE.match(line):
                stanza.setdefault("labels", []).append(m.group(1))
            elif m := _EXACT_SYNONYM_RE.match(line):
                stanza.setdefault("labels", []).append(m.group(1).replace('\\"', '"'))
    flush(stanza)
    return terms


def read_lexicon_file(path: str | os.PathLike) -> list[str]:
    """A user lexicon: one surface form a line; blank lines and ``#`` comments skipped."""
    forms = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                forms.append(line)
    if not forms:
        raise ValueError(f"lexicon file {path} holds no surface forms")
    return forms


def training_mentions(sentences: Iterable[Sentence]) -> dict[str, set[SurfaceForm]]:
    """Distinct mention surface forms per type. Only ever pass the training split."""
    mentions: dict[str, set[SurfaceForm]] = {t: set() for t in ENTITY_TYPES}
    for sentence in sentences:
        for start, end, kind in mention_spans(sentence.tags):
            mentions[kind].add(tuple(sentence.tokens[start:end]))
    return mentions


def build_lexicons(
    train: Iterable[Sentence],
    ontology_dir: str | os.PathLike | None,
    user_files: Mapping[str, str | os.PathLike] | None = None,
) -> Lexicon:
    """Per-type sorted lexicons. A user file for a type replaces that type's defaults."""
    user_files = dict(user_files or {})
    unknown = set(user_files) - set(ENTITY_TYPES)
    if unknown:
        raise ValueError(f"lexicon given for unknown type(s) {sorted(unknown)}; use {ENTITY_TYPES}")
    forms = training_mentions(train)
    for kind, (filename, prefix) in ONTOLOGY_SOURCES.items():
        if kind in user_files or ontology_dir is None:
            continue
        path = Path(ontology_dir) / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"ontology {path} not found: the {kind} lexicon needs it "
                "(UCDenver-ccp/CRAFT, concept-annotation/); pass ontology_dir=DIR"
            )
        forms[kind].update(tokenize(term) for term in read_obo_terms(path, prefix))
    for kind, path in user_files.items():
        forms[kind] = {tokenize(term) for term in read_lexicon_file(path)}
    # Sorted so the RNG's picks depend only on the seed, never on set order.
    return {kind: sorted(f for f in forms[kind] if f) for kind in ENTITY_TYPES}


@dataclass
class AugmentStats:
    """Mentions seen and replaced per type in the augmented copy."""

    mentions: Counter = field(default_factory=Counter)
    replaced: Counter = field(default_factory=Counter)

    def share(self, kind: str) -> float:
        return self.replaced[kind] / self.mentions[kind] if self.mentions[kind] else 0.0


def augment(
    sentences: list[Sentence], lexicons: Lexicon, rate: float = DEFAULT_RATE, seed: int = 42
) -> tuple[list[Sentence], AugmentStats]:
    """A copy of ``sentences`` with about ``rate`` of the mentions replaced.

    Each mention draws once from one ``random.Random(seed)`` in corpus order, so
    the same input, lexicons and seed give the same output.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"augmentation rate must lie in [0, 1], got {rate}")
    rng = random.Random(seed)
    position = {kind: {form: i for i, form in enumerate(forms)} for kind, forms in lexicons.items()}
    stats = AugmentStats()
    augmented: list[Sentence] = []
    for sentence in sentences:
        tokens: list[str] = []
        tags: list[str] = []
        cursor = 0
        for start, end, kind in mention_spans(sentence.tags):
            tokens += sentence.tokens[cursor:start]
            tags += sentence.tags[cursor:start]
            form = tuple(sentence.tokens[start:end])
            stats.mentions[kind] += 1
            replacement = None
            if rng.random() < rate:
                replacement = _pick_other(rng, lexicons.get(kind, []), position.get(kind, {}), form)
            if replacement is None:
                tokens += sentence.tokens[start:end]
                tags += sentence.tags[start:end]
            else:
                stats.replaced[kind] += 1
                tokens += replacement
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(replacement) - 1)
            cursor = end
        tokens += sentence.tokens[cursor:]
        tags += sentence.tags[cursor:]
        augmented.append(Sentence(tokens, tags))
    return augmented, stats


def _pick_other(
    rng: random.Random,
    forms: list[SurfaceForm],
    index: dict[SurfaceForm, int],
    current: SurfaceForm,
) -> SurfaceForm | None:
    """A uniformly drawn lexicon entry other than ``current``; None if there is none."""
    own = index.get(current)
    choices = len(forms) - (own is not None)
    if choices <= 0:
        return None
    k = rng.randrange(choices)
    if own is not None and k >= own:
        k += 1
    return forms[k]

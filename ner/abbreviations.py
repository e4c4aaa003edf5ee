"""Abbreviation definitions in a document (Schwartz & Hearst, 2003), with offsets.

``"5-fluorouracil (5-FU)"`` defines the short form ``5-FU``; so does
``"5-FU (5-fluorouracil)"`` (short form first). :func:`find_definitions` returns
each short form a document defines (the first definition wins), the long form's
character span, and every occurrence of the short form in the document as a whole
word, so that :mod:`ner.abbreviation_resolution` can give them one label.

The algorithm is the paper's: a candidate short form is the text inside
parentheses (up to a ``;`` or ``,``), 2 to 10 characters, at most two words, with
a letter, starting with a letter or digit. Its long form is the shortest run of
words before the parenthesis, within the clause (after the last ``. ``, ``, ``,
``;`` or parenthesis), in which the short form's letters and digits appear in
order, read right to left, the first one at the start of a word; it may have at
most min(|A| + 5, 2|A|) words (``-`` splits words), |A| the short form's letters
and digits. When that fails and the parenthesis holds the long form instead, the
word before it is tried as the short form (it must have a capital letter).

Why not the ``abbreviations`` package (PyPI, the Python port of the paper's
code): it configures the root logger on import, raises on a whole abstract with
an unbalanced parenthesis anywhere (a PubMed abstract is one line, so every
definition in it is lost), and its offsets are into a copy of the text with
quotes removed; it has no short-form-first case. Written here, pure Python over
one text: its cost per document is measured by benchmarks/abbreviation_effect.py.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from typing import NamedTuple

# Where a long form cannot reach back across: a clause's end, a parenthesis or
# bracket next to a space ("N-(2-hydroxyethyl)" and "1,2-dione" stay whole).
_CLAUSE = re.compile(r"[.,;:]\s|\s[(\[]|[)\]]\s")
_WORDS = re.compile(r"[^\s\-]+")
_PARENTHESIS = re.compile(r"[()]")
MAX_SHORT = 10


class Definition(NamedTuple):
    """One short form of a document: its text, the long form's span, its occurrences."""

    short: str
    long_start: int
    long_end: int
    occurrences: tuple[tuple[int, int], ...]  # [start, end) of each whole-word occurrence


def find_definitions(text: str) -> list[Definition]:
    """The short forms ``text`` defines, in order of definition, each with its occurrences."""
    found: dict[str, tuple[int, int]] = {}
    clauses = [m.end() for m in _CLAUSE.finditer(text)]
    for open_at, close_at in _parentheses(text):
        before = bisect_right(clauses, open_at)  # the clause ends up to the parenthesis
        pair = _pair(text, open_at, close_at, clauses[before - 1] if before else 0)
        if pair is not None and pair[0] not in found:
            found[pair[0]] = pair[1:]
    return [
        Definition(short, start, end, _occurrences(text, short))
        for short, (start, end) in found.items()
    ]


def _parentheses(text: str):
    """``(open, close)`` index pairs of balanced parentheses opened after a space."""
    stack: list[int] = []
    for match in _PARENTHESIS.finditer(text):
        i = match.start()
        if text[i] == "(":
            stack.append(i)
        elif stack:
            start = stack.pop()
            if start > 0 and text[start - 1].isspace():
                yield start, i


def _pair(text: str, open_at: int, close_at: int, clause: int) -> tuple[str, int, int] | None:
    """``(short form, long start, long end)`` for the parenthesis at ``open_at``, or None."""
    inside = text[open_at + 1 : close_at]
    cut = min((i for i in (inside.find("; "), inside.find(", "), inside.find(" (")) if i >= 0),
              default=len(inside))  # fmt: skip
    inner = inside[:cut]
    inner_start = open_at + 1 + len(inner) - len(inner.lstrip())
    inner = inner.strip()
    before = text[clause:open_at].rstrip()
    if _valid_short(inner) and len(inner.split()) <= 2:
        start = _long_form_start(inner, before)
        if start is not None and _acceptable(inner, before[start:]):
            return inner, clause + start, clause + len(before)
    # Short form first: the word before the parenthesis, the long form inside it.
    words = before.split()
    if not words or not any(c.isupper() for c in words[-1]):
        return None
    short = words[-1].strip("\"'")
    if not _valid_short(short) or cut < len(inside):
        return None
    start = _long_form_start(short, inner)
    if start != 0 or not _acceptable(short, inner):  # the whole parenthesis is the long form
        return None
    return short, inner_start, inner_start + len(inner)


def _valid_short(short: str) -> bool:
    return 2 <= len(short) <= MAX_SHORT and short[0].isalnum() and any(c.isalpha() for c in short)


def _long_form_start(short: str, candidate: str) -> int | None:
    """Where the long form starts in ``candidate`` (the paper's right-to-left match), or None.

    A Greek letter of the short form also matches its name (``TGF-β``: ``... beta``).
    """
    lower = candidate.lower()
    at = len(candidate) - 1
    for s in range(len(short) - 1, -1, -1):
        char = short[s].lower()
        if not char.isalnum():
            continue
        name = _greek_name(char)
        while at >= 0:
            size = (
                1
                if lower[at] == char
                else len(name)
                if name and lower.endswith(name, 0, at + 1)
                else 0
            )
            first = at + 1 - size  # where the match starts
            if size and not (s == 0 and first > 0 and candidate[first - 1].isalnum()):
                at = first
                break
            at -= 1
        if at < 0:
            return None
        at -= 1
    # The long form starts at the start of the word (space-delimited) holding the match.
    return candidate.rfind(" ", 0, at + 1) + 1


def _greek_name(char: str) -> str:
    """``beta`` for ``β``; empty for any other character."""
    name = unicodedata.name(char, "")
    return name.rsplit(" ", 1)[-1].lower() if name.startswith("GREEK SMALL LETTER ") else ""


def _acceptable(short: str, long: str) -> bool:
    """The paper's checks on a matched pair (its code's ``extractAbbrPair``)."""
    letters = sum(c.isalnum() for c in short)
    words = len(_WORDS.findall(long))
    return (
        len(long) > len(short)
        and sum(c.isalpha() for c in long) > sum(c.isalpha() for c in short)  # not "p < 0.05"
        and short not in long.split()
        and not long.endswith(short)
        and words <= min(letters + 5, letters * 2)
        and letters <= MAX_SHORT
    )


def _occurrences(text: str, short: str) -> tuple[tuple[int, int], ...]:
    """Every occurrence of ``short`` in ``text`` not inside a longer word (case-sensitive)."""
    # str.find, not a regex with a look-behind: that one scanned a 40,000-character
    # full text at about 4 ms per short form.
    found, at = [], text.find(short)
    while at >= 0:
        end = at + len(short)
        if not (at and text[at - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            found.append((at, end))
        at = text.find(short, at + 1)
    return tuple(found)

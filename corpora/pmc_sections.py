"""Section types of PMC full texts, in BioC-PMC's vocabulary, from JATS elements and headings.

BioC-PMC (Comeau et al., "PMC text mining subset in BioC", Database 2019) gives each
passage a ``section_type``: TITLE, ABSTRACT, KEYWORD, INTRO, METHODS, RESULTS,
DISCUSS, CONCL, CASE, FIG, TABLE, SUPPL, REF, APPENDIX, ACK_FUND, AUTH_CONT,
COMP_INT, ABBR, FOOTNOTE, REVIEW_INFO. :mod:`corpora.pmc` types a section by its
``sec-type`` (:func:`sec_type`), else, for a top-level section, by the words of its
heading (:func:`title_type`), else as its parent; :data:`DEFAULT_TYPE` where none
applies (text outside any typed section).
"""

from __future__ import annotations

import re

DEFAULT_TYPE = "PARAGRAPH"
SEC_TYPES = {
    "intro": "INTRO", "introduction": "INTRO", "background": "INTRO",
    "methods": "METHODS", "materials": "METHODS", "subjects": "METHODS",
    "results": "RESULTS", "discussion": "DISCUSS", "conclusions": "CONCL",
    "conclusion": "CONCL", "cases": "CASE", "case-report": "CASE",
    "supplementary-material": "SUPPL", "display-objects": "FIG",
}  # fmt: skip
TITLE_WORDS = {
    "introduction": "INTRO", "background": "INTRO", "method": "METHODS", "material": "METHODS",
    "experimental procedure": "METHODS", "result": "RESULTS", "discussion": "DISCUSS",
    "conclusion": "CONCL", "case report": "CASE", "case presentation": "CASE",
    "supplementary": "SUPPL", "supporting information": "SUPPL", "additional file": "SUPPL",
    "abbreviation": "ABBR", "acknowledg": "ACK_FUND", "funding": "ACK_FUND",
    "competing interest": "COMP_INT", "conflict of interest": "COMP_INT",
    "author contribution": "AUTH_CONT", "authors' contribution": "AUTH_CONT",
    "additional material": "SUPPL", "figures and tables": "FIG",
}  # fmt: skip
# Elements that are a section of a known type wherever they stand.
ELEMENT_TYPES = {"ack": "ACK_FUND", "glossary": "ABBR", "ref-list": "REF"}
ELEMENT_TYPES |= {"fn-group": "FOOTNOTE", "app": "APPENDIX"}
# Floats: each caption is a passage of its own.
FLOATS = {"fig": "FIG", "fig-group": "FIG", "table-wrap": "TABLE", "table-wrap-group": "TABLE"}
FLOATS |= {"supplementary-material": "SUPPL", "chem-struct-wrap": "FIG"}


def title_type(title: str) -> str | None:
    """The section type of the :data:`TITLE_WORDS` entry found earliest in a heading."""
    lowered = title.lower()
    found = [(lowered.find(w), t) for w, t in TITLE_WORDS.items() if w in lowered]
    return min(found)[1] if found else None


def sec_type(value: str | None) -> str | None:
    """``sec-type="materials|methods"`` -> METHODS: the first part that names a type."""
    for part in re.split(r"[|\s]+", (value or "").lower()):
        if part in SEC_TYPES:
            return SEC_TYPES[part]
    return None

"""PMC JATS full texts (``.nxml``) as article rows: text, passages with sections and offsets.

One article -> one row (:data:`ARTICLE_SCHEMA`): ``pmcid``, ``pmid`` (null when the
XML has none), ``doi``, ``title``, ``license``, ``year``, ``text`` and ``passages``,
a list of ``(section_type, title, start, end)`` with character offsets (Python
``str`` indices, i.e. Unicode code points) into ``text``.

The text is the article's passages in document order, separated by one blank line
(``"\\n\\n"``): ``text == "\\n\\n".join(text[p.start:p.end] for p in passages)``.
Within a passage, its heading (the ``title`` field: label and title joined by a
space, null when it has none) and each paragraph are one line each. Inside a
paragraph markup becomes its text (``<italic>``, ``<sup>``, ``<xref>``,
``<named-content>``...), runs of XML whitespace become one space, comments and
processing instructions are dropped, as :mod:`corpora.pubmed_xml` does.

Passages, in order: TITLE; each ``<abstract>`` (not the ``toc``, ``graphical`` and
``teaser`` ones, which repeat it for listings) as ABSTRACT, one passage per
abstract section; each ``<kwd-group>`` as KEYWORD (its keywords joined by ", ");
the body, one passage per section (its heading and its own paragraphs;
subsections follow as their own passages); the back matter
(acknowledgements ACK_FUND, glossary ABBR, back sections and notes, appendices
APPENDIX); then ``<floats-group>``. A figure's, table's or supplementary file's
caption is its own passage (FIG, TABLE, SUPPL; the heading is the label and the
caption's title), right after the passage of the section that holds it. Table
cells, graphics and ``<sub-article>`` s are not read.

Section types are BioC-PMC's (Comeau et al., Database 2019): a section's
``sec-type`` (:data:`SEC_TYPES`), else, for top-level sections only, the first of
:data:`TITLE_WORDS` found in its heading ("Materials and Methods" -> METHODS,
"Results and Discussion" -> RESULTS), else its parent's type; text outside any
typed section is ``PARAGRAPH``. Everything inside an abstract is ABSTRACT.

Excluded unless named in ``keep``: ``"references"`` (the ref-list, REF, one line
per reference), ``"formulas"`` (``disp-formula``, ``inline-formula`` and bare
MathML: their text, else nothing, not even a space) and ``"footnotes"`` (``fn``
anywhere, ``fn-group`` as FOOTNOTE, table footnotes in the TABLE passage).

An article without a body is read (title and abstract passages only; the job
counts them). A file that is not well-formed XML in its declared encoding (a
truncated file, latin-1 bytes declared as UTF-8), has no ``<article>`` or no
PMCID (``<article-id pub-id-type="pmc">``, else a ``PMC<digits>`` file name)
raises :class:`PmcXmlError` naming the reason (:mod:`corpora.pmc_archive` reads
files and ``.tar.gz`` packages, where that is one bad member among the others).
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
from lxml import etree

from corpora.pmc_sections import DEFAULT_TYPE, ELEMENT_TYPES, FLOATS, sec_type, title_type

PASSAGE_TYPE = pa.struct(
    [
        pa.field("section_type", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
    ]
)
ARTICLE_SCHEMA = pa.schema(
    [
        pa.field("pmcid", pa.string(), nullable=False),  # "PMC" + digits
        pa.field("pmid", pa.string()),
        pa.field("doi", pa.string()),
        pa.field("title", pa.string(), nullable=False),
        pa.field("license", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("passages", pa.list_(PASSAGE_TYPE), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_member", pa.string()),  # the path inside an archive; null for a plain file
    ]
)
SEPARATOR = "\n\n"
KEEP_CHOICES = ("references", "formulas", "footnotes")
SKIPPED_ABSTRACTS = ("toc", "graphical", "teaser")
FORMULAS = ("disp-formula", "inline-formula", "math", "tex-math", "disp-formula-group")
# Read as a sequence of lines (each inner paragraph one line) when they hold no text of their own.
CONTAINERS = ("list", "list-item", "def-list", "def-item", "boxed-text", "disp-quote", "statement")
CONTAINERS += ("caption", "glossary", "app", "notes", "verse-group")
# Inside a paragraph these are blocks: a space around them keeps their words apart.
SPACED = {"list-item", "p", "def-item", "term", "def", "td", "th", "tr", "break", "title", "label"}
SPACED |= {"disp-quote", "statement", "verse-line", "mixed-citation", "element-citation"}
SPACED |= {"disp-formula", "fn", "boxed-text", "list"}

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
ALI_LICENSE_REF = "{http://www.niso.org/schemas/ali/1.0/}license_ref"
_XML_SPACE = re.compile(r"[ \t\r\n]+")
_SOFT = "\x00"  # the space around a block in a paragraph, or a field of a reference
_NO_SPACE = re.compile(r"(?:(?<=[ \t\r\n(\[{])\x00+)|(?:\x00+(?=[ \t\r\n,.;:)\]}]|$))|^\x00+")
_SOFT_SPACE = re.compile(r"\x00+")
_PMCID = re.compile(r"PMC\d+")
_YEAR_KINDS = ("epub", "ppub", "collection")


class PmcXmlError(ValueError):
    """A PMC file or archive member that cannot be read; names it and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _name(element) -> str | None:
    """The local tag name; None for comments and processing instructions."""
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else None


def _clean(parts: list[str]) -> str:
    """Joined, a soft space kept only between two non-spaces (``"(2011)"``, ``"NJ,"``)."""
    text = _SOFT_SPACE.sub(" ", _NO_SPACE.sub("", "".join(parts)))
    return _XML_SPACE.sub(" ", text).strip()


class _ArticleReader:
    """Builds one article's text and passages; ``keep`` as in :func:`read_article`."""

    def __init__(self, keep: frozenset[str]):
        self.keep = keep
        self.parts: list[str] = []
        self.length = 0
        self.passages: list[dict[str, Any]] = []

    def excluded(self, name: str) -> bool:
        if name in FORMULAS:
            return "formulas" not in self.keep
        if name in ("fn", "fn-group"):
            return "footnotes" not in self.keep
        return name == "ref-list" and "references" not in self.keep

    def inline(self, element, out: list[str], floats: list, spaced=SPACED) -> None:
        """The element's text into ``out``: floats go to ``floats``, excluded content is dropped.

        ``spaced`` names the children that get a space on each side (blocks in a paragraph);
        None: every element (a reference's fields are often written without one).
        """
        if element.text:
            out.append(element.text)
        for child in element:
            name = _name(child)
            if name in FLOATS or (name is not None and self.excluded(name)):
                if name in FLOATS:
                    floats.append(child)
                if name in FLOATS or name in SPACED:  # "mM.<disp-formula/>Then": words apart
                    out.append(_SOFT)
            elif name is not None:
                space = _SOFT if spaced is None or name in spaced else ""
                out.append(space)
                if name == "alternatives" and len(child):  # one rendering of a formula, not all
                    self.inline(child[0], out, floats, spaced)
                else:
                    self.inline(child, out, floats, spaced)
                out.append(space)
            if child.tail:
                out.append(child.tail)

    def line(self, element, floats: list) -> str:
        out: list[str] = []
        self.inline(element, out, floats, None if _name(element) == "ref" else SPACED)
        return _clean(out)

    def heading(self, element, floats: list) -> str | None:
        """``label`` and ``title`` joined by a space; None when both are absent or empty."""
        parts = [element.find(tag) for tag in ("label", "title")]
        return (
            " ".join(t for t in (self.line(p, floats) for p in parts if p is not None) if t) or None
        )

    def emit(self, section_type: str, title: str | None, lines: list[str]) -> None:
        lines = [line for line in ([title] if title else []) + lines if line]
        if not lines:
            return
        body = "\n".join(lines)
        if self.parts:
            self.parts.append(SEPARATOR)
            self.length += len(SEPARATOR)
        start = self.length
        self.parts.append(body)
        self.length += len(body)
        row = {"section_type": section_type, "title": title, "start": start, "end": self.length}
        self.passages.append(row)

    def blocks(self, element, lines: list[str], floats: list, subsections: list, skip=()) -> None:
        """An element's block children as lines; sections and floats are set aside in order."""
        for child in element:
            name = _name(child)
            if name is None or name in skip or self.excluded(name):
                continue
            if name in ("sec", "ref-list", "fn-group"):
                subsections.append(child)
            elif name in FLOATS:
                floats.append(child)
            elif name in CONTAINERS and not _has_own_text(child):
                self.blocks(child, lines, floats, subsections)
            elif name not in ("alt-title", "object-id", "sec-meta"):
                lines.append(self.line(child, floats))

    def section(self, element, inherited: str, guess: bool, fixed: bool = False) -> None:
        """One passage for the element's heading and own lines, then its floats and subsections."""
        floats: list = []
        name = _name(element)
        title = self.heading(element, floats) if name != "body" else None
        own = None
        if not fixed:
            own = sec_type(element.get("sec-type")) or ELEMENT_TYPES.get(name)
            if own is None and guess and title:
                own = title_type(title)
        kind = own or inherited
        lines: list[str] = []
        subsections: list = []
        self.blocks(element, lines, floats, subsections, skip=("label", "title"))
        self.emit(kind, title, lines)
        for fl in floats:
            self.float(fl)
        for sub in subsections:
            self.section(sub, kind, guess=guess and name == "body", fixed=fixed)

    def float(self, element) -> None:
        """A figure's, table's or supplementary file's label and caption as one passage."""
        name = _name(element)
        floats: list = []
        caption = element.find("caption")
        label = element.find("label")
        parts = [label, caption.find("title") if caption is not None else None]
        title = " ".join(t for t in (self.line(p, floats) for p in parts if p is not None) if t)
        lines: list[str] = []
        if caption is not None:
            self.blocks(caption, lines, floats, [], skip=("title",))
        # A group's floats, a file's own paragraphs; not table cells or graphics.
        for child in element:
            if _name(child) in FLOATS:
                floats.append(child)
            elif _name(child) == "p":
                lines.append(self.line(child, floats))
        if name == "table-wrap" and "footnotes" in self.keep:
            for foot in element.iterfind("table-wrap-foot"):
                self.blocks(foot, lines, floats, [])
        self.emit(FLOATS[name], title or None, lines)
        for fl in floats:  # a group's figures, or a float inside a caption
            self.float(fl)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _has_own_text(element) -> bool:
    if element.text and element.text.strip():
        return True
    return any(c.tail and c.tail.strip() for c in element)


def _text(element) -> str:
    return _clean(list(element.itertext())) if element is not None else ""


def _license(meta) -> str | None:
    """``<license>``'s URL (``xlink:href``, else ``ali:license_ref``), else its text, else its
    ``license-type``; null without one (older articles have a copyright statement only)."""
    lic = meta.find("permissions/license")
    if lic is None:
        return None
    ref = lic.find(ALI_LICENSE_REF)
    for value in (lic.get(XLINK_HREF), _text(ref) if ref is not None else "", _text(lic)):
        if value and value.strip():
            return value.strip()
    return lic.get("license-type") or None


def _year(meta) -> int | None:
    """The year of the epub, else ppub, else collection pub-date, else of any pub-date."""
    dates = {}
    for date in meta.iterfind("pub-date"):
        kind = date.get("pub-type") or date.get("date-type") or ""
        if kind == "pub":  # JATS 1.1+: date-type="pub" publication-format="electronic|print"
            kind = {"electronic": "epub", "print": "ppub"}.get(date.get("publication-format"), kind)
        year = _text(date.find("year"))
        if year.isdigit():
            dates.setdefault(kind, int(year))
    for kind in _YEAR_KINDS:
        if kind in dates:
            return dates[kind]
    return next(iter(dates.values()), None)


def article_row(article, keep=frozenset(), name: str = "") -> tuple[dict[str, Any], bool]:
    """One ``<article>`` element -> (its row without the source columns, whether it has a body)."""
    meta = article.find("front/article-meta")
    if meta is None:
        raise PmcXmlError(name, "no <front>/<article-meta>")
    ids: dict[str, str] = {}
    for aid in meta.iterfind("article-id"):
        ids.setdefault((aid.get("pub-id-type") or "").lower(), _text(aid))
    pmcid = ids.get("pmc") or ids.get("pmcid") or ""
    if pmcid.isdigit():
        pmcid = f"PMC{pmcid}"
    if not _PMCID.fullmatch(pmcid):
        from_name = _PMCID.search(name.rsplit("/", 1)[-1])
        if from_name is None:
            raise PmcXmlError(
                name, "no PMCID: no <article-id pub-id-type='pmc'>, no PMC<digits> name"
            )
        pmcid = from_name.group(0)
    reader = _ArticleReader(frozenset(keep))
    floats: list = []
    title_el = meta.find("title-group/article-title")
    title = reader.line(title_el, floats) if title_el is not None else ""
    reader.emit("TITLE", None, [title])
    for abstract in meta.iterfind("abstract"):
        if abstract.get("abstract-type") not in SKIPPED_ABSTRACTS:
            reader.section(abstract, "ABSTRACT", guess=False, fixed=True)
    for group in meta.iterfind("kwd-group"):
        words = [reader.line(kwd, floats) for kwd in group.iterfind("kwd")]
        reader.emit("KEYWORD", reader.heading(group, floats), [", ".join(w for w in words if w)])
    body = article.find("body")
    if body is not None:
        reader.section(body, DEFAULT_TYPE, guess=True)
    back = article.find("back")
    if back is not None:
        for child in back:
            if _name(child) is not None and not reader.excluded(_name(child)):
                if _name(child) == "app-group":
                    for app in child.iterfind("app"):
                        reader.section(app, "APPENDIX", guess=False)
                else:
                    reader.section(child, DEFAULT_TYPE, guess=True)
    for fl in article.iterfind("floats-group/*"):
        if _name(fl) in FLOATS:
            reader.float(fl)
    row = {
        "pmcid": pmcid,
        "pmid": ids.get("pmid") or None,
        "doi": ids.get("doi") or None,
        "title": title,
        "license": _license(meta),
        "year": _year(meta),
        "text": reader.text,
        "passages": reader.passages,
    }
    return row, body is not None


_PARSER_OPTIONS = {"resolve_entities": False, "no_network": True, "huge_tree": True}


def read_articles(data: bytes, name: str, keep=frozenset()) -> list[tuple[dict[str, Any], bool]]:
    """The articles of one JATS document (``<article>``, or a ``<pmc-articleset>`` of them)."""
    try:
        root = etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
    except etree.XMLSyntaxError as err:
        where = re.sub(r" \(<string>, line \d+\)$", "", str(err))  # the position is in the message
        if "encoding" in where or "UTF-8" in where:  # UTF-8 unless the declaration names another
            raise PmcXmlError(name, f"bytes not in the declared encoding: {where}") from err
        raise PmcXmlError(name, f"malformed XML: {where}") from err
    if root.tag == "article":
        articles = [root]
    elif root.tag == "pmc-articleset":
        articles = root.findall("article")
    else:
        raise PmcXmlError(name, f"root element <{root.tag}> is not a JATS <article>")
    if not articles:
        raise PmcXmlError(name, "no <article> in the file")
    return [article_row(article, keep, name) for article in articles]


def read_article(data: bytes, name: str = "", keep=frozenset()) -> dict[str, Any]:
    """One article's row (its first, for a set); ``keep`` names excluded parts to keep."""
    return read_articles(data, name, keep)[0][0]

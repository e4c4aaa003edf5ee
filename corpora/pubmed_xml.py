"""PubMed/MEDLINE XML files (``.xml`` or ``.xml.gz``) as citation rows, streamed.

Both DTD generations NLM has published are read:

- ``MedlineCitationSet`` (files up to 2016): the records are ``MedlineCitation``;
- ``PubmedArticleSet`` (current): ``PubmedArticle`` (= ``MedlineCitation`` +
  ``PubmedData``) and ``PubmedBookArticle`` (``BookDocument`` + ``PubmedBookData``).

Either may end with ``DeleteCitation``: PMIDs (with their ``Version``) that the
file withdraws; they come out as deletion rows, apart from the citations.

Memory stays flat whatever the file's size: :func:`iter_pubmed` parses with
``lxml.etree.iterparse`` and, once a record is read, clears it and drops it (and
anything before it) from the tree, so at most one record is held at a time.

Text fields: an element's text is its whole text content in document order,
children and their tails included (``itertext``), so inline markup such as
``<i>``, ``<b>``, ``<u>``, ``<sup>``, ``<sub>`` or MathML becomes its plain text,
and comments and processing instructions are dropped; the parser decodes
character references and entities (``&lt;`` -> ``<``). Runs of XML whitespace
(space, tab, CR, LF) become one space and the ends are stripped, so every field
is one line (PubTator-compatible); other Unicode spaces (U+00A0, U+2009) are
content and kept. A structured abstract is its ``AbstractText`` sections in
order, each led by its ``Label`` attribute (``"BACKGROUND: ..."``), joined with
one space; sections without text are skipped; ``OtherAbstract`` and
``CopyrightInformation`` are not part of it. A record without an abstract has
``abstract == ""``, so it is still annotated by its title.

A file that cannot be read to its end (malformed XML, a truncated gzip stream,
not a PubMed file, a record without a PMID) raises :class:`PubmedXmlError`
naming the file and the reason.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
from lxml import etree

CITATION_SCHEMA = pa.schema(
    [
        pa.field("pmid", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("abstract", pa.string(), nullable=False),
        pa.field("language", pa.string()),  # Language codes joined with "," ("eng", "eng,fre")
        pa.field("journal", pa.string()),
        pa.field("pub_year", pa.int32()),
        pa.field("date_revised", pa.string()),  # ISO YYYY-MM-DD
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),  # 0-based, citations only
    ]
)
DELETION_SCHEMA = pa.schema(
    [
        pa.field("pmid", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
    ]
)
ROOTS = ("MedlineCitationSet", "PubmedArticleSet")
_RECORDS = ("MedlineCitation", "PubmedArticle", "PubmedBookArticle", "DeleteCitation")
_XML_SPACE = re.compile(r"[ \t\r\n]+")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun"), 1)} | {
    m: i for i, m in enumerate(("jul", "aug", "sep", "oct", "nov", "dec"), 7)
}
GZIP_MAGIC = b"\x1f\x8b"


class PubmedXmlError(ValueError):
    """A PubMed XML file that cannot be read to its end; names the file and the reason."""

    def __init__(self, source_file: str, reason: str):
        super().__init__(f"{source_file}: {reason}")
        self.source_file = source_file
        self.reason = reason


@dataclass(frozen=True)
class Record:
    """One item of a file: ``kind`` is ``"citation"`` or ``"deletion"``; ``row`` fits its schema."""

    kind: str
    row: dict[str, Any]


@contextmanager
def open_pubmed(path: str, filesystem=None) -> Iterator[IO[bytes]]:
    """A binary stream of the XML, gunzipped when the file starts with the gzip magic bytes."""
    with ExitStack() as stack:
        if filesystem is None:
            raw = stack.enter_context(open(path, "rb"))
        else:
            raw = stack.enter_context(filesystem.open_input_file(path))
        head = raw.read(2)
        raw.seek(0)
        if head == GZIP_MAGIC:
            yield stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        else:
            yield raw


def text_of(element) -> str:
    """The element's text content, markup flattened, XML whitespace runs as one space."""
    if element is None:
        return ""
    return _XML_SPACE.sub(" ", "".join(element.itertext())).strip()


def abstract_of(abstract) -> str:
    """``AbstractText`` sections in order, each led by ``"LABEL: "`` when labelled, joined by a space."""
    if abstract is None:
        return ""
    parts = []
    for section in abstract.iterfind("AbstractText"):
        body = text_of(section)
        if not body:
            continue
        label = _XML_SPACE.sub(" ", section.get("Label") or "").strip()
        parts.append(f"{label}: {body}" if label else body)
    return " ".join(parts)


def _version(pmid) -> int:
    value = (pmid.get("Version") or "1").strip()
    return int(value) if value.isdigit() else 1


def _iso_date(date) -> str | None:
    """``<Year>``, ``<Month>`` (number or English abbreviation), ``<Day>`` as YYYY-MM-DD."""
    if date is None:
        return None
    year, month, day = (text_of(date.find(tag)) for tag in ("Year", "Month", "Day"))
    month_number = int(month) if month.isdigit() else _MONTHS.get(month[:3].lower(), 0)
    if not (year.isdigit() and day.isdigit() and 1 <= month_number <= 12):
        return None
    return f"{int(year):04d}-{month_number:02d}-{int(day):02d}"


def _year(pub_date) -> int | None:
    """PubDate's ``Year``, else the first 4-digit year of its ``MedlineDate`` ("1998 Dec-1999 Jan")."""
    if pub_date is None:
        return None
    year = text_of(pub_date.find("Year"))
    if year.isdigit():
        return int(year)
    found = _YEAR.search(text_of(pub_date.find("MedlineDate")))
    return int(found.group(1)) if found else None


def _languages(parent) -> str | None:
    codes = [text_of(lang) for lang in parent.iterfind("Language")]
    return ",".join(code for code in codes if code) or None


def citation_row(citation, source_file: str, record_index: int) -> dict[str, Any]:
    """The row of one ``MedlineCitation`` element."""
    pmid = citation.find("PMID")
    if pmid is None or not text_of(pmid):
        raise PubmedXmlError(source_file, f"record {record_index} has no PMID")
    article = citation.find("Article")
    if article is None:
        article = etree.Element("Article")  # the DTD requires it; read what there is
    journal = text_of(article.find("Journal/Title")) or text_of(
        citation.find("MedlineJournalInfo/MedlineTA")
    )
    return {
        "pmid": text_of(pmid),
        "version": _version(pmid),
        "title": text_of(article.find("ArticleTitle")),
        "abstract": abstract_of(article.find("Abstract")),
        "language": _languages(article),
        "journal": journal or None,
        "pub_year": _year(article.find("Journal/JournalIssue/PubDate")),
        "date_revised": _iso_date(citation.find("DateRevised")),
        "source_file": source_file,
        "record_index": record_index,
    }


def book_row(book_article, source_file: str, record_index: int) -> dict[str, Any]:
    """The row of one ``PubmedBookArticle``: a book or chapter; ``journal`` is null.

    The title is the chapter's ``ArticleTitle``, else the ``BookTitle``.
    """
    document = book_article.find("BookDocument")
    if document is None:
        raise PubmedXmlError(source_file, f"record {record_index} has no BookDocument")
    pmid = document.find("PMID")
    if pmid is None or not text_of(pmid):
        raise PubmedXmlError(source_file, f"record {record_index} has no PMID")
    return {
        "pmid": text_of(pmid),
        "version": _version(pmid),
        "title": text_of(document.find("ArticleTitle")) or text_of(document.find("Book/BookTitle")),
        "abstract": abstract_of(document.find("Abstract")),
        "language": _languages(document),
        "journal": None,
        "pub_year": _year(document.find("Book/PubDate")),
        "date_revised": _iso_date(document.find("DateRevised")),
        "source_file": source_file,
        "record_index": record_index,
    }


def _release(element) -> None:
    """Free a finished element and everything before it in its parent: the tree stays one record."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def iter_records(stream: IO[bytes], source_file: str) -> Iterator[Record]:
    """Citations and deletions of one file, in file order; raises :class:`PubmedXmlError`."""
    index = 0
    try:
        events = etree.iterparse(
            stream,
            events=("start", "end"),
            tag=(*ROOTS, *_RECORDS),
            resolve_entities=False,  # no external entities (the DOCTYPE's DTD is not loaded)
            huge_tree=True,  # a long text node is data, not an attack, in NLM's own files
        )
        root_seen = False
        for event, element in events:
            tag = element.tag
            if event == "start":
                if not root_seen:
                    root = element.getroottree().getroot().tag
                    if root not in ROOTS:
                        raise PubmedXmlError(source_file, f"root element <{root}> is not PubMed's")
                    root_seen = True
                continue
            if tag in ROOTS:
                continue
            parent = element.getparent()
            if tag == "MedlineCitation" and parent is not None and parent.tag == "PubmedArticle":
                continue  # read when its PubmedArticle ends
            if tag == "DeleteCitation":
                for pmid in element.iterfind("PMID"):
                    row = {"pmid": text_of(pmid), "version": _version(pmid)}
                    yield Record("deletion", {**row, "source_file": source_file})
            elif tag == "PubmedBookArticle":
                yield Record("citation", book_row(element, source_file, index))
                index += 1
            else:
                citation = element if tag == "MedlineCitation" else element.find("MedlineCitation")
                if citation is None:
                    raise PubmedXmlError(source_file, f"record {index} has no MedlineCitation")
                yield Record("citation", citation_row(citation, source_file, index))
                index += 1
            _release(element)
        if not root_seen:
            root = events.root.tag if events.root is not None else None
            raise PubmedXmlError(source_file, f"root element <{root}> is not PubMed's")
    except etree.XMLSyntaxError as err:
        raise PubmedXmlError(source_file, f"malformed XML: {err}") from err
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise PubmedXmlError(source_file, f"truncated or corrupt gzip: {err}") from err
    except OSError as err:
        raise PubmedXmlError(source_file, f"cannot read: {err}") from err


def iter_pubmed(path: str, filesystem=None, source_file: str | None = None) -> Iterator[Record]:
    """:func:`iter_records` of the file at ``path`` (``source_file`` defaults to its name)."""
    name = source_file or str(path).rstrip("/").rsplit("/", 1)[-1]
    try:
        opened = open_pubmed(str(path), filesystem)
        stream = opened.__enter__()
    except OSError as err:
        raise PubmedXmlError(name, f"cannot open: {err}") from err
    try:
        yield from iter_records(stream, name)
    finally:
        opened.__exit__(None, None, None)


def read_pubmed(path: str, filesystem=None) -> tuple[pa.Table, pa.Table]:
    """The citations and deletions of one file as tables (a convenience for small files)."""
    citations, deletions = [], []
    for record in iter_pubmed(path, filesystem):
        (citations if record.kind == "citation" else deletions).append(record.row)
    return (
        pa.Table.from_pylist(citations, schema=CITATION_SCHEMA),
        pa.Table.from_pylist(deletions, schema=DELETION_SCHEMA),
    )

"""Gold corpora with character offsets: PubTator, BioC XML and CRAFT-IOB as documents.

A gold document is a title and an abstract whose text is ``title + " " + abstract``
(PubTator's convention, and what the annotation job writes with
``text_columns=[title, abstract]`` and ``separator=" "``), plus its mentions as
character spans into that text. Matching and metrics are in :mod:`corpora.gold_metrics`.

Malformed gold is an error naming the file and line (:class:`GoldFormatError`),
because a mention silently skipped or shifted changes every score: non-integer
offsets, ``end <= start``, offsets beyond the text, a mention text that differs
from the document text at its offsets, a mention of an unknown document, a
repeated title or abstract. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corpora.pubtator import TitledDocument as GoldDocument
from plumbing.config import ConfigError

GOLD_FORMATS = ("pubtator", "bioc")


@dataclass(frozen=True)
class Span:
    """A mention: character offsets into its document's text, a type, and a score (gold: 1)."""

    doc_id: str
    start: int
    end: int
    type: str
    text: str = ""
    score: float = 1.0


class GoldFormatError(ValueError):
    """A malformed gold file; the message starts with ``path:line:``."""

    def __init__(self, path: str | Path, line_no: int | None, reason: str):
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.line_no, self.reason = str(path), line_no, reason


def check_mention(doc: GoldDocument, start: int, end: int, text: str | None, path, line_no) -> None:
    """Offsets inside the document and the mention text equal to the text there, or an error."""
    if end <= start:
        raise GoldFormatError(path, line_no, f"end {end} is not after start {start}")
    if start < 0 or end > len(doc.text):
        raise GoldFormatError(
            path,
            line_no,
            f"offsets {start}-{end} outside document {doc.doc_id} ({len(doc.text)} characters)",
        )
    if text is not None and doc.text[start:end] != text:
        raise GoldFormatError(
            path,
            line_no,
            f"mention text {text!r} differs from the document text at {start}-{end}: "
            f"{doc.text[start:end]!r}",
        )


def _int(value: str, name: str, path, line_no) -> int:
    try:
        return int(value)
    except ValueError:
        raise GoldFormatError(path, line_no, f"{name} {value!r} is not an integer") from None


def read_pubtator_gold(path: str | Path) -> list[GoldDocument]:
    """Documents with their mentions, in file order.

    Lines: ``PMID|t|title``, ``PMID|a|abstract``, mentions
    ``PMID<TAB>start<TAB>end<TAB>text<TAB>type[<TAB>id[<TAB>...]]`` (BC5CDR's
    composite mentions carry extra columns, which are ignored), relation lines
    ``PMID<TAB>CID<TAB>...`` (ignored), blank lines between documents.
    """
    documents: dict[str, GoldDocument] = {}
    pending: list[tuple[int, list[str]]] = []  # mentions, checked once every text is read
    with open(path, encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            head, bar, rest = line.partition("|")
            if bar and "\t" not in head and rest[:2] in ("t|", "a|"):
                doc = documents.setdefault(head, GoldDocument(head, "", ""))
                part = "title" if rest[0] == "t" else "abstract"
                if getattr(doc, part):
                    raise GoldFormatError(path, line_no, f"second {part} for document {head}")
                setattr(doc, part, rest[2:])
                continue
            fields = line.split("\t")
            if len(fields) == 4 and not fields[1].isdigit():
                continue  # a relation line (PMID CID chemical disease)
            if len(fields) < 5:
                raise GoldFormatError(
                    path,
                    line_no,
                    "expected 'PMID|t|', 'PMID|a|' or a mention "
                    f"'PMID<TAB>start<TAB>end<TAB>text<TAB>type', got {line[:80]!r}",
                )
            pending.append((line_no, fields))
    for line_no, fields in pending:
        doc_id, start, end, text, kind = fields[:5]
        doc = documents.get(doc_id)
        if doc is None:
            raise GoldFormatError(path, line_no, f"mention of unknown document {doc_id!r}")
        start_i = _int(start, "start", path, line_no)
        end_i = _int(end, "end", path, line_no)
        check_mention(doc, start_i, end_i, text, path, line_no)
        if not kind.strip():
            raise GoldFormatError(path, line_no, "empty mention type")
        doc.mentions.append(Span(doc_id, start_i, end_i, kind, text))
    return list(documents.values())


def read_bioc_gold(path: str | Path) -> list[GoldDocument]:
    """Documents of a BioC XML collection (read with the ``bioc`` package).

    The first passage is the title, the rest the abstract: passages are laid out
    at their offsets (gaps filled with spaces), so the second passage must start
    at least one character after the first ends. An annotation's type is its
    ``type`` infon; one with several locations (a discontinuous mention) is
    scored as one span from its first start to its last end. Errors name the
    file and the line of the annotation (found again with lxml, which bioc uses).
    """
    import bioc

    try:
        with open(path, encoding="utf-8") as handle:
            collection = bioc.biocxml.load(handle)
    except (ValueError, KeyError) as err:  # e.g. int() of an offset attribute
        raise GoldFormatError(path, _bad_bioc_line(path), f"unreadable BioC: {err}") from None
    documents = []
    for document in collection.documents:
        doc_id = document.id
        passages = sorted(document.passages, key=lambda p: p.offset)
        text = ""
        for passage in passages:
            if passage.offset < len(text):
                raise GoldFormatError(
                    path, _bioc_line(path, doc_id, None), f"overlapping passages in {doc_id}"
                )
            text += " " * (passage.offset - len(text)) + (passage.text or "")
        if len(passages) > 1:
            split = passages[1].offset
            if passages[0].offset + len(passages[0].text or "") >= split:
                raise GoldFormatError(
                    path,
                    _bioc_line(path, doc_id, None),
                    f"document {doc_id}: the second passage must start at least one "
                    "character after the first ends (title + ' ' + abstract)",
                )
            doc = GoldDocument(doc_id, text[: split - 1], text[split:])
        else:
            doc = GoldDocument(doc_id, text, "")
        annotations = [a for p in passages for a in p.annotations] + list(document.annotations)
        for ann in annotations:
            line_no = _bioc_line(path, doc_id, ann.id)
            if not ann.locations:
                raise GoldFormatError(path, line_no, f"annotation {ann.id} has no location")
            start = min(loc.offset for loc in ann.locations)
            end = max(loc.offset + loc.length for loc in ann.locations)
            single = len(ann.locations) == 1
            check_mention(doc, start, end, ann.text if single else None, path, line_no)
            kind = ann.infons.get("type") or ""
            if not kind.strip():
                raise GoldFormatError(path, line_no, f"annotation {ann.id} has no type infon")
            doc.mentions.append(Span(doc_id, start, end, kind, doc.text[start:end]))
        documents.append(doc)
    return documents


def _bioc_tree(path):
    from lxml import etree

    return etree.parse(str(path))


def _bioc_line(path, doc_id: str, ann_id: str | None) -> int | None:
    """Source line of a document's annotation (or of the document), for error messages."""
    for document in _bioc_tree(path).iter("document"):
        if document.findtext("id") != doc_id:
            continue
        if ann_id is None:
            return document.sourceline
        for ann in document.iter("annotation"):
            if ann.get("id") == ann_id:
                return ann.sourceline
        return document.sourceline
    return None


def _bad_bioc_line(path) -> int | None:
    """Line of the first offset or length attribute that is not an integer."""
    for element in _bioc_tree(path).iter("location", "offset"):
        values = [element.text] if element.tag == "offset" else list(element.attrib.values())
        for value in values:
            try:
                int(value or "")
            except ValueError:
                return element.sourceline
    return None


def read_gold(path: str | Path, fmt: str = "auto") -> list[GoldDocument]:
    """PubTator or BioC gold; ``auto`` reads ``.xml`` files as BioC."""
    if fmt == "auto":
        fmt = "bioc" if str(path).lower().endswith(".xml") else "pubtator"
    if fmt not in GOLD_FORMATS:
        raise ConfigError(f"gold format must be auto, {' or '.join(GOLD_FORMATS)}, got {fmt!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"gold file not found: {path}")
    return read_pubtator_gold(path) if fmt == "pubtator" else read_bioc_gold(path)


def iob_documents(
    sentences: Sequence[tuple[Sequence[str], Sequence[str]]],
    prefix: str,
    sentences_per_document: int = 10,
) -> list[GoldDocument]:
    """IOB2-tagged sentences (tokens, tags) joined into documents with character offsets.

    Tokens are joined with spaces; a document's first sentence is its title, the
    others its abstract, so its text is the sentences joined with spaces. Lets a
    CRAFT split run through the annotation job like any other gold corpus.
    """
    documents = []
    for first in range(0, len(sentences), sentences_per_document):
        doc_id = f"{prefix}-{first // sentences_per_document:05d}"
        texts, mentions, position = [], [], 0
        for tokens, tags in sentences[first : first + sentences_per_document]:
            starts = []
            for token in tokens:
                starts.append(position)
                position += len(token) + 1  # the space after it (or between sentences)
            kind, begin = None, 0
            for i, tag in enumerate([*tags, "O"]):
                if kind is not None and not (tag.startswith("I-") and tag[2:] == kind):
                    mentions.append((begin, starts[i - 1] + len(tokens[i - 1]), kind))
                    kind = None
                if tag.startswith(("B-", "I-")) and kind is None:
                    begin, kind = starts[i], tag[2:]
            texts.append(" ".join(tokens))
        title, abstract = texts[0], " ".join(texts[1:])
        doc = GoldDocument(doc_id, title, abstract)
        doc.mentions = [Span(doc_id, s, e, k, doc.text[s:e]) for s, e, k in mentions]
        documents.append(doc)
    return documents

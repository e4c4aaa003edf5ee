"""Full-text annotation output (one text column, e.g. PMC articles) -> BioC XML and PubTator.

A run over one text column (``text_columns=[text]``, as for jobs.pmc_to_parquet's
articles) has offsets into that text, the whole article. Its passages (the run's
``passages_column``: ``section_type, title, start, end`` over the text) come from
the annotation output when it carries them, else from the run's input joined by id.

- BioC XML, as BioC-PMC has it: one passage per section (each of the article's
  passages, subsections and captions included) whose ``offset`` is its start in the
  article text; annotation locations are document offsets, so they are the
  entities' own. Passage infons: ``section_type`` (TITLE, ABSTRACT, METHODS, ...) and
  ``type`` (:data:`BIOC_TYPES`: front, abstract, fig_caption, table_caption, ref,
  else paragraph). A document without passages is one passage of type ``text``.
- PubTator, which holds a title and an abstract only (PubTator3 itself exports
  full texts as BioC, not in this format): the title line is the article's title
  (its TITLE passage) and the abstract line the rest of the text, from the character
  after the title (the second of the blank line, written as a space). So every
  offset stays the article text's own; without a TITLE passage the title line is
  empty and the offsets are the text's plus one, as PubTator counts them.

Every entity's text is checked against the text at its offsets (a mismatch, a text
changed since the annotation, is an :class:`~corpora.export.ExportError`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from corpora.export import ExportError, Mention, _join_texts, bioc_annotation, checked_mention
from corpora.pubtator import TitledDocument
from ner import columns as C

BIOC_TYPES = {
    "TITLE": "front",
    "ABSTRACT": "abstract",
    "FIG": "fig_caption",
    "TABLE": "table_caption",
    "REF": "ref",
}


@dataclass
class FullText:
    """One article: its text, passages ``(section_type, start, end)`` and mentions in it."""

    doc_id: str
    text: str
    passages: list[tuple[str | None, int, int]]
    mentions: list[Mention] = field(default_factory=list)

    def titled(self) -> TitledDocument:
        """The PubTator frame: the TITLE passage, then the rest of the text (see the module)."""
        first = self.passages[0] if self.passages else None
        title_end = first[2] if first is not None and first[0] == "TITLE" else 0
        title = self.text[:title_end]
        rest = title_end + 1 if title_end else 0  # the abstract line starts here in the text
        document = TitledDocument(self.doc_id, title, self.text[rest:])
        shift = len(title) + 1 - rest
        for m in self.mentions:
            moved = 0 if m.start < title_end else shift
            document.mentions.append(
                Mention(m.start + moved, m.end + moved, m.text, m.type, m.label, m.score)
            )
        return document


def to_fulltext(
    row: dict, type_map: dict[str, str], text_column: str, passages_column: str = ""
) -> FullText:
    """One annotation row (``doc_id``, ``entities``, the text and its passages) as a FullText."""
    doc_id = str(row[C.DOC_ID])
    text = row.get(text_column) or ""
    given = row.get(passages_column) if passages_column else None
    if given:
        passages = [(p["section_type"], p["start"], p["end"]) for p in given]
    else:
        passages = [(None, 0, len(text))]
    document = FullText(doc_id, text, passages)
    for entity in sorted(row[C.ENTITIES] or [], key=lambda e: (e["start"], e["end"])):
        if entity["column"] not in (text_column, ""):
            raise ExportError(
                f"document {doc_id}: entity {entity['text']!r} lies in column "
                f"{entity['column']!r}, not in {text_column!r} (text_columns)"
            )
        document.mentions.append(checked_mention(doc_id, entity, entity["start"], text, type_map))
    return document


def read_fulltexts(
    annotation_files: Sequence[str],
    type_map: dict[str, str],
    text_column: str,
    passages_column: str = "",
    input_files: Sequence[str] = (),
    id_column: str = "pmcid",
    filesystem=None,
) -> Iterator[FullText]:
    """The documents of the annotation output files, in file order, with text and passages.

    Both come from the annotation files when they hold them, else from ``input_files``
    (the annotation job's input) joined on ``id_column``.
    """
    wanted = [text_column, *([passages_column] if passages_column else [])]
    inputs = None
    for path in annotation_files:
        names = pq.read_schema(path, filesystem=filesystem).names
        own = all(name in names for name in wanted)
        columns = [C.DOC_ID, C.ENTITIES, *(wanted if own else [])]
        table = pq.read_table(path, columns=columns, filesystem=filesystem)
        if not own:
            if not input_files:
                raise ExportError(
                    f"{path} has no {' and '.join(wanted)} columns: annotate with "
                    f"passthrough=[{','.join(wanted)}], or give input= (the annotation job's "
                    "input Parquet) to join them by id"
                )
            if inputs is None:
                inputs = _inputs(input_files, id_column, wanted, filesystem)
            table = _join_texts(table, inputs, path)
        for row in table.to_pylist():
            yield to_fulltext(row, type_map, text_column, passages_column)


def _inputs(files, id_column: str, wanted: list[str], filesystem) -> pa.Table:
    tables = []
    for path in files:
        table = pq.read_table(path, columns=[id_column, *wanted], filesystem=filesystem)
        ids = table.column(id_column).cast(pa.string())
        tables.append(
            pa.table([ids, *table.drop_columns([id_column]).columns], [C.DOC_ID, *wanted])
        )
    return pa.concat_tables(tables)


def bioc_fulltext(document: FullText):
    """A BioC document: a passage per section at its article offset, annotations in them."""
    import bioc

    doc = bioc.BioCDocument()
    doc.id = document.doc_id
    passages = []
    for section_type, start, end in document.passages:
        passage = bioc.BioCPassage.of_text(document.text[start:end], start)
        if section_type is None:
            passage.infons["type"] = "text"
        else:
            passage.infons["section_type"] = section_type
            passage.infons["type"] = BIOC_TYPES.get(section_type, "paragraph")
        doc.add_passage(passage)
        passages.append(passage)
    starts = [p.offset for p in passages]
    for number, mention in enumerate(document.mentions):
        annotation = bioc_annotation(number, mention)
        at = max(bisect.bisect_right(starts, mention.start) - 1, 0)
        passages[at].add_annotation(annotation)
    return doc

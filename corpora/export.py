"""Annotation output -> PubTator and BioC XML, the formats other biomedical tools read.

Documents are title + abstract, as in PubTator: offsets index ``title + " " +
abstract`` (the abstract starts at ``len(title) + 1``, also when the title is
empty). The annotation job's offsets index the non-empty text columns joined with
its separator (:func:`ner.windowing.join_text`); each entity names its column, so
it is moved into the PubTator frame from that column's start, and its text is
checked against the document text there (a mismatch, input changed since the
annotation, is an :class:`ExportError` naming the document).

A run over one text column (full texts) is exported by :mod:`corpora.fulltext_export`.

The texts come from the annotation output when it carries ``title`` and
``abstract`` (``passthrough=[title,abstract]``), else from the annotation job's
input Parquet, joined by id. The ``text`` column of ``include_text=true`` is not
enough: it cannot tell where the title ends.

Types: our ``Gene`` label is Gene Ontology *cellular component* (CRAFT's GO),
while other tools' "Gene" means a gene or gene product (our ``Protein``), so
labels are exported through an explicit map, :data:`DEFAULT_TYPE_MAP`, whose
names cannot be misread; ``type_map.LABEL=NAME`` overrides entries.

PubTator lines must stay lines: tab and the characters ``str.splitlines`` breaks
on (LF, CR, VT, FF, U+001C-U+001E, U+0085, U+2028, U+2029) become spaces in titles,
abstracts and mention texts, which keeps every offset. Mention lines have six
columns, ``pmid start end text type -`` (no concept id): PubTator readers, the
``bioc`` package's among them, read a five-column line as a relation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from corpora.pubtator import TitledDocument
from ner import columns as C
from ner.windowing import join_text
from plumbing.config import JobConfig

DEFAULT_TYPE_MAP = {
    "Chemical": "Chemical",  # ChEBI
    "Cell": "CellType",  # Cell Ontology: cell types, not cell lines
    "Protein": "GeneOrGeneProduct",  # CRAFT GGP: what other tools call "Gene"
    "Gene": "GO_CellularComponent",  # CRAFT GO: not genes
    "Sequence": "SequenceFeature",  # Sequence Ontology
    "Taxon": "Taxon",  # NCBI Taxonomy, any rank
}
NO_CONCEPT_ID = "-"
_LINE_BREAKS = str.maketrans(dict.fromkeys("\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))


class ExportError(ValueError):
    """Annotations that cannot be exported as asked; the message says what to change."""


def export_type_map(changes: Mapping[str, str]) -> dict[str, str]:
    """``{"Gene": "CellularComponent"}`` over :data:`DEFAULT_TYPE_MAP`."""
    return DEFAULT_TYPE_MAP | dict(changes)


class ExportConfig(JobConfig):
    """Settings of jobs.export."""

    annotations: str = Field(description="the annotation job's output directory")
    out: str = Field(description="file to write")
    format: Literal["pubtator", "bioc"] = Field("pubtator", description="pubtator or bioc")
    input: list[str] | None = Field(
        None,
        description="annotation input Parquet, for texts the output lacks "
        "(default: the inputs the run's _manifest.json names)",
    )
    id_column: str | None = Field(
        None, description="input id column (default: the run's, else pmid)"
    )
    type_map: dict[str, str] = Field(
        {},
        description="exported type names by label, over the defaults: "
        "{Gene: CellularComponent}, or type_map.LABEL=NAME",
    )


@dataclass(frozen=True)
class Mention:
    start: int  # in title + " " + abstract
    end: int
    text: str
    type: str  # the exported name
    label: str  # the model's label
    score: float


def to_document(
    row: dict,
    type_map: dict[str, str],
    text_columns: Sequence[str] = ("title", "abstract"),
    separator: str = " ",
) -> TitledDocument:
    """One annotation row (``doc_id``, ``entities`` and the two text columns) in the PubTator frame."""
    title_column, abstract_column = text_columns
    values = [row.get(title_column), row.get(abstract_column)]
    _, present, starts = join_text(values, list(text_columns), separator)
    title, abstract = (v or "" for v in values)
    document = TitledDocument(str(row[C.DOC_ID]), title, abstract)
    text = document.text
    for entity in sorted(row[C.ENTITIES] or [], key=lambda e: (e["start"], e["end"])):
        column = entity["column"]
        if column not in present:
            raise ExportError(
                f"document {document.doc_id}: entity {entity['text']!r} lies in column "
                f"{column!r}, not in {title_column!r} or {abstract_column!r} (text_columns)"
            )
        base = 0 if column == title_column else len(title) + 1
        start = entity["start"] - starts[present.index(column)] + base
        document.mentions.append(checked_mention(document.doc_id, entity, start, text, type_map))
    return document


def checked_mention(
    doc_id: str, entity: dict, start: int, text: str, type_map: dict[str, str]
) -> Mention:
    """The entity as a mention at ``start`` in ``text``, which must hold its text there."""
    end = start + entity["end"] - entity["start"]
    if text[start:end] != entity["text"]:
        raise ExportError(
            f"document {doc_id}: entity {entity['text']!r} at {entity['start']} is "
            f"{text[start:end]!r} in the text given: was it changed after annotation?"
        )
    label = entity["label"]
    if label not in type_map:
        raise ExportError(f"label {label!r} has no export name: add type_map.{label}=NAME")
    score = float(entity["score"]) if entity["score"] is not None else float("nan")
    return Mention(start, end, entity["text"], type_map[label], label, score)


def read_documents(
    annotation_files: Sequence[str],
    type_map: dict[str, str],
    text_columns: Sequence[str] = ("title", "abstract"),
    separator: str = " ",
    input_files: Sequence[str] = (),
    id_column: str = "pmid",
    filesystem=None,
) -> Iterator[TitledDocument]:
    """The documents of the annotation output files, in file order, with their texts.

    Texts come from the annotation files' own ``text_columns`` when present, else
    from ``input_files`` (the annotation job's input) joined on ``id_column``.
    """
    if len(text_columns) != 2:
        raise ExportError(f"exports need two text columns (title, abstract), got {text_columns}")
    texts = None
    for path in annotation_files:
        names = pq.read_schema(path, filesystem=filesystem).names
        has_texts = all(name in names for name in text_columns)
        table = pq.read_table(
            path,
            columns=[C.DOC_ID, C.ENTITIES, *(text_columns if has_texts else [])],
            filesystem=filesystem,
        )
        if not has_texts:
            if not input_files:
                raise ExportError(
                    f"{path} has no {' and '.join(text_columns)} columns: annotate with "
                    f"passthrough=[{','.join(text_columns)}], or give input= (the annotation "
                    "job's input Parquet) to join the texts by id; include_text alone cannot "
                    "tell where the title ends"
                )
            if texts is None:
                texts = _input_texts(input_files, id_column, text_columns, filesystem)
            table = _join_texts(table, texts, path)
        for row in table.to_pylist():
            yield to_document(row, type_map, text_columns, separator)


def _input_texts(files, id_column, text_columns, filesystem) -> pa.Table:
    tables = []
    for path in files:
        table = pq.read_table(path, columns=[id_column, *text_columns], filesystem=filesystem)
        tables.append(
            table.rename_columns([C.DOC_ID, *text_columns]).cast(
                pa.schema([(C.DOC_ID, pa.string())] + [(c, pa.string()) for c in text_columns])
            )
        )
    return pa.concat_tables(tables)


def _join_texts(table: pa.Table, texts: pa.Table, path: str) -> pa.Table:
    """``table`` with the text columns of its ids' rows in ``texts``, row order kept."""
    if pc.count_distinct(texts.column(C.DOC_ID)).as_py() != texts.num_rows:
        raise ExportError("the input given holds some ids more than once: which text is meant?")
    found = pc.index_in(table.column(C.DOC_ID), value_set=texts.column(C.DOC_ID))
    if found.null_count:
        missing = table.filter(pc.is_null(found)).column(C.DOC_ID).to_pylist()
        raise ExportError(f"{path}: {len(missing)} doc_id(s) not in the input, e.g. {missing[:3]}")
    matched = texts.take(found)
    for name in texts.column_names[1:]:
        table = table.append_column(name, matched.column(name))
    return table


def one_line(text: str) -> str:
    """Tab and line breaks as spaces: same length, so offsets hold."""
    return text.translate(_LINE_BREAKS)


def pubtator_block(document: TitledDocument) -> str:
    """``pmid|t|title``, ``pmid|a|abstract``, one line per mention, and the blank line after."""
    pmid = document.doc_id
    lines = [f"{pmid}|t|{one_line(document.title)}", f"{pmid}|a|{one_line(document.abstract)}"]
    lines += [
        f"{pmid}\t{m.start}\t{m.end}\t{one_line(m.text)}\t{m.type}\t{NO_CONCEPT_ID}"
        for m in document.mentions
    ]
    return "\n".join(lines) + "\n\n"


@dataclass
class ExportCounts:
    documents: int = 0
    mentions: int = 0
    types: Counter = field(default_factory=Counter)

    def add(self, document: TitledDocument) -> None:
        self.documents += 1
        self.mentions += len(document.mentions)
        self.types.update(m.type for m in document.mentions)


def write_pubtator(documents: Iterable[TitledDocument], stream: TextIO) -> ExportCounts:
    counts = ExportCounts()
    for document in documents:
        stream.write(pubtator_block(document))
        counts.add(document)
    return counts


def bioc_document(document: TitledDocument):
    """A BioC document: passages ``title`` (offset 0) and ``abstract`` (offset len(title)+1).

    Annotations sit in the passage they lie in; locations are document offsets,
    as BioC has them; infons ``type`` (the exported name), ``label`` and ``score``.
    """
    import bioc

    doc = bioc.BioCDocument()
    doc.id = document.doc_id
    passages = []
    for kind, text, offset in (
        ("title", document.title, 0),
        ("abstract", document.abstract, len(document.title) + 1),
    ):
        passage = bioc.BioCPassage.of_text(text, offset)
        passage.infons["type"] = kind
        doc.add_passage(passage)
        passages.append(passage)
    for number, mention in enumerate(document.mentions):
        annotation = bioc_annotation(number, mention)
        passages[0 if mention.start < passages[1].offset else 1].add_annotation(annotation)
    return doc


def bioc_annotation(number: int, mention: Mention):
    """One mention as a BioC annotation, its location in document offsets."""
    import bioc  # imported where BioC is written, as above

    annotation = bioc.BioCAnnotation()
    annotation.id = str(number)
    annotation.text = mention.text
    annotation.infons.update(type=mention.type, label=mention.label, score=f"{mention.score:.4f}")
    annotation.add_location(bioc.BioCLocation(mention.start, mention.end - mention.start))
    return annotation


def write_bioc_xml(
    documents: Iterable, file, type_map: dict[str, str], source: str, to_bioc=bioc_document
) -> ExportCounts:
    """BioC XML to ``file`` (a path or a binary stream), a document at a time.

    ``to_bioc`` makes each BioC document (:func:`corpora.fulltext_export.bioc_fulltext`
    for full texts)."""
    import datetime

    import bioc
    from bioc.biocxml.encoder import BioCXMLDocumentWriter

    collection = bioc.BioCCollection()
    collection.source = source
    collection.date = datetime.date.today().isoformat()
    collection.key = "craft-ner.key"
    collection.infons["type_map"] = json.dumps(type_map, sort_keys=True)
    counts = ExportCounts()
    writer = BioCXMLDocumentWriter(file)
    try:
        writer.write_collection_info(collection)
        for document in documents:
            writer.write_document(to_bioc(document))
            counts.add(document)
    finally:
        writer.close()
    return counts

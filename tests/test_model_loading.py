import json

import pytest

from ner.labels import ID2LABEL
from ner.model import (
    ModelNotFoundError,
    load_base_for_training,
    load_classifier,
    make_untrained_model,
    model_fingerprint,
    save_tiny_model,
)


def test_tiny_model_loads_as_classifier(tiny_model_dir):
    loaded = load_classifier(tiny_model_dir)
    assert loaded.id2label == ID2LABEL
    assert loaded.tokenizer.is_fast
    assert loaded.fingerprint.startswith("sha256:")


def test_published_spelling_maps_and_unknown_tags_fail(tmp_path):
    published = {0: "O", 1: "B-GENE", 2: "I-GENE", 3: "B-GGP", 4: "I-GGP"}
    directory = save_tiny_model(
        tmp_path / "pub",
        num_labels=5,
        id2label=published,
        label2id={v: k for k, v in published.items()},
    )
    assert load_classifier(directory).id2label[3] == "B-Protein"
    config = json.loads((directory / "config.json").read_text())
    config["id2label"]["4"] = "I-DISEASE"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="I-DISEASE"):
        load_classifier(directory)


def test_embedded_base_model_gets_the_project_head():
    model = load_base_for_training("embedded")
    assert model.config.num_labels == len(ID2LABEL)
    assert model.config.id2label[1] == "B-Chemical"


def test_untrained_model_is_a_loadable_classifier_directory(tmp_path):
    """The smoke-run model the README points to: the embedded MiniLM with a random head."""
    loaded = load_classifier(make_untrained_model(tmp_path / "untrained"))
    assert loaded.id2label == ID2LABEL
    assert loaded.tokenizer.is_fast


def test_missing_models_fail_clearly(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_base_for_training(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_classifier(tmp_path / "empty")


def test_fingerprint_tracks_weights(tmp_path):
    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(save_tiny_model(tmp_path / "c", seed=0))

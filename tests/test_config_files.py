"""Every config file the docs, the deployment files and the configs themselves name exists and parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig, ReprocessConfig
from plumbing.config import load_config
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"configs/[A-Za-z0-9_.-]+\.yaml")
# Which config class a file is for, by its name's job prefix.
CLASSES = {"train": TrainConfig, "annotate": AnnotateConfig, "reprocess": ReprocessConfig}


def _documents() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "cluster.yaml",
        *sorted((ROOT / "deploy").glob("*.yaml")),
        *sorted((ROOT / "configs").glob("*.yaml")),
    ]


def _named() -> list[tuple[str, str]]:
    return sorted(
        {(doc.name, name) for doc in _documents() for name in NAMED.findall(doc.read_text())}
    )


def test_the_documents_name_configs():
    names = {name for _, name in _named()}
    # The GPU entry points must be named somewhere a user reads.
    assert {"configs/annotate_gpu.yaml", "configs/train_biobert_gpu.yaml"} <= names


@pytest.mark.parametrize("document, name", _named())
def test_a_named_config_exists_and_parses(document, name):
    path = ROOT / name
    assert path.is_file(), f"{document} names {name}, which does not exist"
    job = path.stem.split("_")[0]
    assert job in CLASSES, f"{name}: the file name should start with a job: {sorted(CLASSES)}"
    load_config(CLASSES[job], path)  # checked as it is built


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_opens_with_the_command_that_runs_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# python -m jobs.") and f"--config configs/{path.name}" in first

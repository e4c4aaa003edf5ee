"""Shared fixtures: the real CRAFT data beside the project, and tiny fixture files."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
CRAFT_DIR = SHARED_DATA / "craft-iob"


@pytest.fixture(scope="session")
def craft_dir() -> Path:
    if not (CRAFT_DIR / "train.tsv").is_file():
        pytest.fail(
            f"the real CRAFT-IOB data is expected at {CRAFT_DIR} (../shared beside the clone)"
        )
    return CRAFT_DIR


@pytest.fixture(scope="session")
def craft_dataset(craft_dir, tmp_path_factory) -> Path:
    """The training dataset as jobs.build_dataset writes it (seed 42), built once a session."""
    from training.dataset import build_dataset, write_dataset

    out = tmp_path_factory.mktemp("dataset")
    write_dataset(build_dataset(craft_dir, seed=42), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT token classifier saved as a model directory (no download)."""
    from ner.model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_iob(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    """Write sentences of (token, tag) pairs as a CRAFT-IOB file."""
    blocks = ["".join(f"{tok}\t{tag}\n" for tok, tag in sentence) for sentence in sentences]
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts down the in-process Ray instance, if any, when the session ends."""
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """A real local Ray instance (2 CPUs, like CI), shared by the tests that need one.

    Started on first use and kept for the session; started again if a test (the
    job-submission test, which runs its own `ray start` cluster) shut it down.
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    return ray

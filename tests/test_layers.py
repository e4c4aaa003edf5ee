"""The architecture as a contract: layering (import-linter) and module size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    """jobs above annotation | training above corpora above ner above plumbing; only
    annotation and training import Ray; benchmarks without jobs.

    The contracts live in pyproject.toml ([tool.importlinter]).
    """
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(ROOT)  # import-linter reads pyproject.toml from the working directory
    try:
        assert lint_imports() == 0, "an import contract is broken: run .venv/bin/lint-imports"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("package, limit", [("jobs", 150), ("annotation", 400), ("training", 400), ("ner", 400), ("corpora", 400), ("plumbing", 400), ("benchmarks", 400)])  # fmt: skip
def test_modules_stay_small(package, limit):
    """Jobs are recipes (about 150 lines); library modules stay under 400."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / package).glob("*.py")}
    assert sizes, f"no modules in {package}/"
    too_long = {name: n for name, n in sizes.items() if n > limit}
    assert not too_long, f"{package}/ modules over {limit} lines: {too_long}"

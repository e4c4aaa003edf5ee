"""The GPU suite runs on CPU with --tiny, so it cannot rot between GPU sessions.

The annotation parts run here. The training part (two peers, each with its own
start-up) is left to the device run: on this 2-core VM it alone takes longer than
the rest of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_suite_tiny_writes_its_json_and_table(tmp_path):
    command = [sys.executable, "-m", "benchmarks.gpu_suite", "--tiny", "--parts", "a,b,c"]
    command += ["--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    annotation = result["annotation"]
    assert set(annotation) == {"a_pipeline", "b_forward", "c_job"}
    for part in annotation.values():
        assert part["tokens_per_s"] > 0 and part["docs_per_s"] > 0 and part["pubmed_gpu_hours"] > 0
    assert annotation["c_job"]["docs"] == 500  # one copy of the sample in --tiny
    assert set(result["ratios"]) == {"c/b", "c/a", "b/a"}
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "| c_job |" in table and "c/b" in table

"""The run manifest: written whole and last, readable back, absent for an unfinished run."""

import os

import pyarrow.fs as pafs
import pytest

from annotation.config import AnnotateConfig
from annotation.manifest import MANIFEST, build_manifest, read_manifest, write_manifest
from annotation.run import RunSummary
from corpora.corpus import InputFile

LOCAL = pafs.LocalFileSystem()


def _manifest():
    summary = RunSummary(
        run_id="r1", rows_in=3, rows_out=2, rows_rejected=1, files=["/o/a.parquet"]
    )
    summary.rejected_files = ["/o/_rejected/a.parquet"]
    config = AnnotateConfig(input=["/in"], output="/o", model="m")
    return build_manifest(config, "sha256:f", [InputFile("/in/a.parquet", 3)], summary)


def test_a_written_manifest_reads_back_with_its_run_and_files(tmp_path):
    assert read_manifest(LOCAL, str(tmp_path)) is None  # no complete run yet
    write_manifest(LOCAL, str(tmp_path), _manifest())
    manifest = read_manifest(LOCAL, str(tmp_path))
    assert manifest["run_id"] == "r1" and manifest["balanced"] is True
    assert manifest["model_fingerprint"] == "sha256:f"
    assert manifest["files"] == ["/o/a.parquet"]
    assert manifest["rejected_files"] == ["/o/_rejected/a.parquet"]
    assert manifest["inputs"] == [{"path": "/in/a.parquet", "num_rows": 3}]
    assert "files" not in manifest["summary"] and manifest["summary"]["rows_out"] == 2
    assert os.listdir(tmp_path) == [MANIFEST]


def test_a_crash_while_writing_leaves_the_previous_manifest(tmp_path, monkeypatch):
    write_manifest(LOCAL, str(tmp_path), _manifest())
    newer = {**_manifest(), "run_id": "r2"}

    def crash(*args):
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError):
        write_manifest(LOCAL, str(tmp_path), newer)
    assert read_manifest(LOCAL, str(tmp_path))["run_id"] == "r1"

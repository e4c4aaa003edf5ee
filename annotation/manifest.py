"""The run manifest ``<output>/_manifest.json``: written last, so only complete runs have one.

It records the run id, the model, the config, the input files and the summary,
and lists the files the run's output consists of. It is written by
:func:`plumbing.atomic.write_json_atomic` (temporary name, then moved into place), so a
reader finds either no manifest or a whole one.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pyarrow.fs as pafs

from plumbing.atomic import write_json_atomic

MANIFEST = "_manifest.json"


def manifest_path(root: str) -> str:
    return f"{root.rstrip('/')}/{MANIFEST}"


def build_manifest(config, fingerprint: str, inputs: list, summary) -> dict:
    """The manifest of a finished run (``summary`` is an :class:`annotation.run.RunSummary`)."""
    return {
        "run_id": summary.run_id,
        "model_name": config.model,
        "model_fingerprint": fingerprint,
        "config": config.model_dump(),
        "inputs": [asdict(item) for item in inputs],
        "summary": {
            k: v for k, v in asdict(summary).items() if k not in ("files", "rejected_files")
        },
        "balanced": summary.balanced,
        "files": summary.files,
        "rejected_files": summary.rejected_files,
    }


def write_manifest(filesystem: pafs.FileSystem, root: str, manifest: dict) -> str:
    """Publish ``manifest`` as ``<root>/_manifest.json``, atomically; returns its path."""
    return write_json_atomic(manifest_path(root), manifest, filesystem)


def read_manifest(filesystem: pafs.FileSystem, root: str) -> dict | None:
    """The manifest of the run that completed in ``root``, or None if none did."""
    path = manifest_path(root)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read())

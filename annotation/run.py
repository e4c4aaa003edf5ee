"""Run an annotation: the validation preamble, resume, the streaming run, the summary.

:func:`prepare_run` is the one validation preamble (inputs found and their footers
read, output outside the input, model present, fingerprint) that jobs.annotate and
jobs.reprocess share; :func:`run_annotate` is jobs.annotate's whole run, which
reprocessing reuses for the documents it has to annotate.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from annotation.cluster import init_ray
from annotation.config import AnnotateConfig, new_run_id
from annotation.manifest import build_manifest, write_manifest
from annotation.pipeline import build_pipeline
from annotation.reach import check_reachable
from annotation.resources import release_resources
from annotation.resume import ResumeState, remove_stale
from corpora.corpus import InputError, InputFile, expand_inputs, resolve_filesystem, validate_inputs
from corpora.writer import ParquetShardWriter
from ner import columns as C
from ner.model import model_fingerprint, resolve_model
from plumbing.failpoints import failpoint


@dataclass
class PreparedRun:
    """What the validation preamble found: the inputs and the model's fingerprint."""

    filesystem: pafs.FileSystem
    files: list[str]
    inputs: list[InputFile]
    fingerprint: str

    @property
    def rows(self) -> int:
        return sum(item.num_rows for item in self.inputs)


def output_filesystem(
    output: str, filesystem: pafs.FileSystem | None
) -> tuple[pafs.FileSystem, str]:
    """The output's filesystem and path: ``filesystem`` with ``output`` in it, or resolved."""
    return (filesystem, output) if filesystem is not None else resolve_filesystem(output)


def prepare_run(
    config: AnnotateConfig, output: str, filesystem: pafs.FileSystem | None = None
) -> PreparedRun:
    """Check the inputs (footers only), the output and the model, before Ray starts.

    ``filesystem``: where the inputs are, when their URIs alone do not say how to
    reach them (a store's staging area, with its storage options). Fails with
    :class:`~plumbing.config.ConfigError`, :class:`~corpora.corpus.InputError` or
    :class:`~ner.model.ModelNotFoundError` naming the file, column or model. The config
    itself was checked when it was built.
    """
    out_fs, out_root = output_filesystem(output, filesystem)
    filesystem, files = expand_inputs(config.input, filesystem)
    others = [*config.passthrough, *([config.passages_column] if config.passages_column else [])]
    inputs = validate_inputs(filesystem, files, config.id_column, config.text_columns, others)
    for item in inputs:
        if out_fs.type_name == filesystem.type_name and item.path.startswith(
            out_root.rstrip("/") + "/"
        ):
            raise InputError(f"output {output} contains input file {item.path}")
    resolve_model(config.model)  # a missing model directory fails here, before Ray starts
    return PreparedRun(filesystem, files, inputs, model_fingerprint(config.model))


@dataclass
class RunSummary:
    """What one run did; printed, and stored in the manifest."""

    run_id: str
    rows_in: int
    rows_out: int = 0
    rows_rejected: int = 0
    tokens: int = 0
    bio_repairs: int = 0
    wall_s: float = 0.0
    pipeline_s: float = 0.0  # the streaming run alone, without validation or Ray start-up
    statuses: dict[str, int] = field(default_factory=dict)
    entity_types: dict[str, int] = field(default_factory=dict)
    resumed: int = 0  # documents an earlier attempt of this run wrote (counted in rows_*)
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rejected_files: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rows_rejected

    def format(self) -> str:
        wall = max(self.wall_s, 1e-9)
        entities = sum(self.entity_types.values())
        lines = [
            f"run {self.run_id}",
            f"rows_in {self.rows_in:,} == rows_out {self.rows_out:,} + rows_rejected "
            f"{self.rows_rejected:,}: {'OK' if self.balanced else 'MISMATCH'}",
            f"documents {self.rows_out + self.rows_rejected:,} ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.statuses.items()))
            + ")"
            + (f"; {self.resumed:,} written by an earlier attempt" if self.resumed else ""),
            f"tokens {self.tokens:,}; entities {entities:,}; BIO repairs {self.bio_repairs:,}",
            "entities per type: "
            + (", ".join(f"{k} {v:,}" for k, v in sorted(self.entity_types.items())) or "none"),
            f"wall {self.wall_s:.1f} s (pipeline {self.pipeline_s:.1f} s); "
            f"{(self.rows_out + self.rows_rejected) / wall:,.1f} docs/s; "
            f"{self.tokens / wall:,.0f} tokens/s",
        ]
        if self.duplicate_ids:
            lines.append(
                f"WARNING: {self.duplicate_ids:,} doc_id(s) occur more than once, e.g. "
                + ", ".join(self.duplicate_examples[:5])
            )
        return "\n".join(lines)


def find_duplicates(
    filesystem: pafs.FileSystem, paths: list[str], limit: int = 20
) -> tuple[int, list[str]]:
    """How many doc_ids occur more than once in the written files, and a few of them."""
    if not paths:
        return 0, []
    ids = pa.concat_arrays(
        [
            chunk
            for path in paths
            for chunk in pq.read_table(path, columns=[C.DOC_ID], filesystem=filesystem)
            .column(C.DOC_ID)
            .chunks
        ]
    ).drop_null()
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return len(repeated), [str(v) for v in repeated.field("values")[:limit].to_pylist()]


def _check_reachable(ray, config, prepared: PreparedRun, out_fs, out_root: str) -> None:
    """The local input, output and model must be on every node that runs the pipeline."""
    paths = {"model": config.model if os.path.isdir(config.model) else ""}
    if isinstance(prepared.filesystem, pafs.LocalFileSystem) and prepared.files:
        paths["input"] = prepared.files[0]
    if isinstance(out_fs, pafs.LocalFileSystem):
        out_fs.create_dir(out_root, recursive=True)
        paths["output"] = out_root
    check_reachable(ray, paths)


def run_annotate(
    config: AnnotateConfig,
    *,
    rejected_columns: Sequence[str] = (),
    on_stats: Callable[[dict], None] | None = None,
    resume: bool = True,
    writer: ParquetShardWriter | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> RunSummary:
    """Validate the inputs, run the pipeline, check the row balance, write the manifest.

    Hooks for jobs built on this one (``jobs.reprocess``): ``rejected_columns`` are
    pass-through columns also kept in rejected records; ``on_stats`` is called with
    each writer stats row (one per file written) as it arrives, so a caller can
    follow progress or stop the run by raising; ``resume=False`` annotates every
    input row even if files of this run_id exist (the caller tracks progress itself),
    and leaves the check for repeated ids to the caller; ``writer`` replaces the
    output writer, and ``filesystem`` is that of the input and the output.
    """
    started = time.perf_counter()
    prepared = prepare_run(config, config.output, filesystem)
    out_fs, out_root = output_filesystem(config.output, filesystem)
    run_id = config.run_id or new_run_id()
    summary = RunSummary(run_id=run_id, rows_in=prepared.rows)
    earlier = (
        ResumeState.load(out_fs, out_root, run_id, prepared.fingerprint)
        if config.run_id and resume
        else ResumeState()
    )
    resumed = earlier.stats
    summary.resumed = earlier.documents
    summary.rows_out, summary.rows_rejected = resumed["rows"], resumed["rejected"]
    summary.tokens, summary.bio_repairs = resumed["tokens"], resumed["bio_repairs"]
    statuses: Counter = Counter(resumed["statuses"])
    entity_types: Counter = Counter(resumed["entity_types"])
    summary.files, summary.rejected_files = earlier.paths(False), earlier.paths(True)
    if earlier.files:
        print(
            f"resuming run {run_id}: {len(earlier.files):,} file(s) with {summary.resumed:,} "
            "documents are already written and are skipped",
            flush=True,
        )
    elif resume:  # without resume the caller tracks progress, and says how to resume
        print(f"run {run_id} (to resume after an interruption: run_id={run_id})", flush=True)
    failpoint("annotate.before_pipeline")

    pipeline_started = time.perf_counter()
    try:
        stats_rows = ()
        if summary.resumed < summary.rows_in:  # else nothing is left: no Ray, no model
            ray = init_ray(
                config.ray_address,
                config.num_cpus,
                config.object_store_mb,
                dashboard=config.dashboard,
                verbose=config.verbose,
                progress_bars=config.progress_bars,
                heap_trim_s=config.heap_trim_s,
            )
            _check_reachable(ray, config, prepared, out_fs, out_root)
            print(
                f"annotating {summary.rows_in - summary.resumed:,} documents in "
                f"{len(prepared.files):,} file(s) with {config.model} ({prepared.fingerprint}) "
                f"-> {config.output}",
                flush=True,
            )
            stats_rows = build_pipeline(
                config,
                prepared.filesystem,
                prepared.files,
                prepared.fingerprint,
                run_id,
                rejected_columns,
                skip_row_hashes=earlier.row_hashes,
                writer=writer,
            ).iter_rows()
        for row in stats_rows:
            summary.rows_out += row["rows"]
            summary.rows_rejected += row["rejected"]
            summary.tokens += row["tokens"]
            summary.bio_repairs += row["bio_repairs"]
            statuses.update(json.loads(row["statuses"]))
            entity_types.update(json.loads(row["entity_types"]))
            if row["file"]:
                summary.files.append(row["file"])
            if row["rejected_file"]:
                summary.rejected_files.append(row["rejected_file"])
            if on_stats is not None:
                on_stats(row)
            # Killed here, the file is written but the run's manifest is not.
            failpoint("annotate.after_file")
    finally:
        release_resources()  # withdraw the nodes check_cluster asked an autoscaler for
    summary.pipeline_s = time.perf_counter() - pipeline_started
    summary.statuses = dict(statuses)
    summary.entity_types = dict(entity_types)
    summary.files.sort()
    summary.rejected_files.sort()
    if resume:  # reading every written id is the caller's business otherwise
        summary.duplicate_ids, summary.duplicate_examples = find_duplicates(
            out_fs, summary.files + summary.rejected_files
        )
    if config.remove_stale:
        remove_stale(out_fs, out_root, set(summary.files) | set(summary.rejected_files))
    summary.wall_s = time.perf_counter() - started
    manifest = build_manifest(config, prepared.fingerprint, prepared.inputs, summary)
    failpoint("annotate.before_manifest")
    write_manifest(out_fs, out_root, manifest)
    return summary

"""Annotate a Parquet corpus with entity spans, streaming on Ray Data.

python -m jobs.annotate --config configs/annotate_cpu.yaml input=DIR_OR_URI output=DIR [key=value ...]

Reads the input files' footers first (fails on a missing file, column or unreadable
file before any model work), then streams: read Parquet (projected columns) ->
TokenizeStage (CPU actors) -> TokenClassifierStage (actor pool, GPUs when present)
-> SpanDecodeStage (CPU tasks) -> ParquetShardWriter (CPU tasks). Prints a summary
and checks rows_in == rows_out + rows_rejected; the manifest ``_manifest.json`` is
written last.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ner import columns as C
from ner.config import ConfigError, option, parse_job_args
from ner.corpus import InputError, expand_inputs, resolve_filesystem, validate_inputs
from ner.decode import SpanDecodeStage
from ner.failpoints import failpoint
from ner.inference import TokenClassifierStage, default_num_threads
from ner.model import model_fingerprint, resolve_model
from ner.windowing import WORD_UNITS, TokenizeStage
from ner.writer import (
    REJECTED_DIR,
    ParquetShardWriter,
    WrittenFile,
    list_written,
    merge_stats,
    read_footer,
)

MANIFEST = "_manifest.json"


@dataclass
class AnnotateConfig:
    """Settings of the annotation job; execution settings live here, not in the stages."""

    input: list[str] = option(
        [], "Parquet files or directories, local paths or URIs (s3://, gs://, ...)"
    )
    output: str = option(
        "outputs/annotations", "output directory or URI; _rejected/ and _manifest.json go inside"
    )
    model: str = option("outputs/model", "trained token-classifier directory (or a cached hub id)")
    id_column: str = option(
        "doc_id", "input column with the document id (written as the string doc_id)"
    )
    text_columns: list[str] = option(
        ["text"], "input text columns, joined with `separator`; offsets are into the joined text"
    )
    separator: str = option(
        " ", "string between text columns (a space: PubTator's title + abstract offsets)"
    )
    passthrough: list[str] = option([], "input columns copied unchanged to the output")
    include_text: bool = option(False, "also write the joined text as column `text`")
    max_length: int = option(512, "window length in sub-tokens, special tokens included")
    stride: int = option(128, "sub-tokens shared by consecutive windows of a long document")
    word_unit: str = option(
        "tokenizer",
        "what a word is for decoding: 'tokenizer' (its pre-tokenizer, splits punctuation) or 'whitespace'",
    )
    max_chars: int = option(
        1_000_000, "longer documents are rejected (reason recorded), not annotated"
    )
    tokenize_batch_size: int = option(64, "documents per tokenizer call")
    classify_batch_size: int = option(
        64, "documents per classifier call; their windows are sorted by length"
    )
    micro_batch_size: int = option(32, "windows per forward pass")
    write_batch_size: int = option(2000, "documents per output file (at most)")
    tokenize_concurrency: list[int] = option([1, 2], "tokenizer actors: [min, max]")
    classifier_concurrency: list[int] = option(
        [1, 1], "classifier actors: [min, max] (autoscaling between them)"
    )
    num_gpus_per_actor: float | None = option(
        None, "GPUs per classifier actor; empty = 1 when the cluster has GPUs, else 0"
    )
    classifier_num_cpus: float = option(
        0.5,
        "CPUs reserved per classifier actor (bookkeeping: torch_threads sets its threads; "
        "Ray Data's file listing needs 1 free CPU, so keep the sum of reservations below the cluster's)",
    )
    cpu_stage_num_cpus: float = option(
        0.25, "CPUs reserved per read, tokenize, decode and write worker"
    )
    torch_threads: int = option(
        0, "intra-op threads per CPU classifier actor; 0 = cluster CPUs / max classifier actors"
    )
    device: str = option("auto", "'auto' (cuda when present), 'cpu' or 'cuda'")
    run_id: str = option(
        "",
        "id written with every row; empty = UTC time + random suffix. Rerunning an "
        "interrupted run with its run_id skips the documents it already wrote",
    )
    ray_address: str = option("", "Ray cluster address; empty = RAY_ADDRESS or a new local cluster")
    num_cpus: int = option(0, "CPUs of a new local cluster (0 = all)")
    object_store_mb: int = option(
        0, "object store of a new local cluster in MiB (0 = Ray's default)"
    )
    progress_bars: bool = option(True, "show Ray Data's progress bars")
    remove_stale: bool = option(
        True, "delete output Parquet files of earlier runs that this run did not write"
    )

    def check(self) -> None:
        if self.word_unit not in WORD_UNITS:
            raise ConfigError(f"word_unit must be one of {', '.join(WORD_UNITS)}")
        for name in ("tokenize_concurrency", "classifier_concurrency"):
            value = getattr(self, name)
            if len(value) != 2 or not 1 <= value[0] <= value[1]:
                raise ConfigError(f"{name} must be [min, max] with 1 <= min <= max, got {value}")
        if not self.text_columns:
            raise ConfigError("text_columns must name at least one column")
        for name in (
            "tokenize_batch_size",
            "classify_batch_size",
            "micro_batch_size",
            "write_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")


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


def _init_ray(config: AnnotateConfig):
    import ray

    if not ray.is_initialized():
        kwargs = {}
        if config.ray_address:
            kwargs["address"] = config.ray_address
        else:
            if config.num_cpus:
                kwargs["num_cpus"] = config.num_cpus
            if config.object_store_mb:
                kwargs["object_store_memory"] = config.object_store_mb * 1024 * 1024
        ray.init(**kwargs)
    return ray


def build_annotate_pipeline(
    config: AnnotateConfig,
    filesystem: pafs.FileSystem,
    files: list[str],
    model_name: str,
    fingerprint: str,
    run_id: str,
    rejected_columns: Sequence[str] = (),
    skip_row_hashes=None,
):
    """The Ray Data pipeline, lazy: read -> tokenize -> classify -> decode -> write (stats rows).

    ``rejected_columns`` (pass-through columns) are also copied into rejected records.
    ``skip_row_hashes`` (a sorted uint64 array) are input rows an earlier attempt of
    this run already wrote; they are dropped right after the read.
    """
    import ray
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    num_gpus = config.num_gpus_per_actor
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    threads = config.torch_threads
    if threads <= 0 and num_gpus == 0:
        cpus = int(resources.get("CPU", 0)) or default_num_threads()
        threads = max(1, cpus // config.classifier_concurrency[1])
    light = config.cpu_stage_num_cpus
    read_columns = [config.id_column, *config.text_columns]
    read_columns += [c for c in config.passthrough if c not in read_columns]

    ds = ray.data.read_parquet(
        files,
        filesystem=filesystem,
        include_paths=True,
        include_row_hash=True,
        num_cpus=light,
    ).select_columns([*read_columns, C.PATH, C.ROW_HASH])
    if skip_row_hashes is not None and len(skip_row_hashes):
        ds = ds.map_batches(
            _skip_written,
            fn_kwargs=dict(done_ref=ray.put(skip_row_hashes)),
            batch_format="pyarrow",
            num_cpus=light,
        )
    ds = ds.map_batches(
        TokenizeStage,
        fn_constructor_kwargs=dict(
            model=config.model,
            text_columns=config.text_columns,
            id_column=config.id_column,
            max_length=config.max_length,
            stride=config.stride,
            separator=config.separator,
            passthrough=[*config.passthrough, C.ROW_HASH],
            max_chars=config.max_chars,
            word_unit=config.word_unit,
        ),
        batch_size=config.tokenize_batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            min_size=config.tokenize_concurrency[0], max_size=config.tokenize_concurrency[1]
        ),
        num_cpus=light,
        udf_modifying_row_count=False,
    )
    ds = ds.map_batches(
        TokenClassifierStage,
        fn_constructor_kwargs=dict(
            model=config.model,
            micro_batch_size=config.micro_batch_size,
            device=config.device if num_gpus > 0 or config.device != "auto" else "cpu",
            num_threads=threads,
        ),
        batch_size=config.classify_batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            min_size=config.classifier_concurrency[0], max_size=config.classifier_concurrency[1]
        ),
        num_cpus=config.classifier_num_cpus,
        num_gpus=num_gpus,
        udf_modifying_row_count=False,
    )
    ds = ds.map_batches(
        _decode,
        batch_size=config.classify_batch_size,
        batch_format="pyarrow",
        num_cpus=light,
        udf_modifying_row_count=False,
    )
    return ds.map_batches(
        _write,
        fn_kwargs=dict(
            writer=ParquetShardWriter(
                config.output,
                model_name=model_name,
                model_fingerprint=fingerprint,
                run_id=run_id,
                passthrough=config.passthrough,
                include_text=config.include_text,
                rejected_columns=rejected_columns,
            )
        ),
        batch_size=config.write_batch_size,
        batch_format="pyarrow",
        num_cpus=light,
    )


_DONE_CACHE: dict = {}


def _skip_written(batch: pa.Table, done_ref) -> pa.Table:
    # The set can hold millions of hashes: fetch it once per worker process, not per batch.
    import ray

    key = done_ref.hex()
    if key not in _DONE_CACHE:
        _DONE_CACHE.clear()
        _DONE_CACHE[key] = ray.get(done_ref)
    hashes = batch.column(C.ROW_HASH).to_numpy(zero_copy_only=False)
    return batch.filter(pa.array(~np.isin(hashes, _DONE_CACHE[key])))


def _decode(batch: pa.Table) -> pa.Table:
    # SpanDecodeStage holds no state, so it runs as plain tasks.
    return SpanDecodeStage()(batch)


def _write(batch: pa.Table, writer: ParquetShardWriter) -> pa.Table:
    return writer(batch)


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


def _remove_stale(filesystem: pafs.FileSystem, root: str, keep: set[str]) -> list[str]:
    # Temporary files too: any left there belong to a crashed or killed writer.
    removed = [p for p in list_written(filesystem, root, temporary=True) if p not in keep]
    for path in removed:
        filesystem.delete_file(path)
    return removed


def written_by_run(
    filesystem: pafs.FileSystem, root: str, run_id: str, fingerprint: str
) -> list[WrittenFile]:
    """Files an earlier attempt of ``run_id`` wrote with this model (their footers say so).

    Files of other runs or models are not reused: they are replaced, and removed at
    the end of the run as stale. Files from before row identities were recorded
    (no row hashes in the footer) are not reused either.
    """
    done = []
    for path in list_written(filesystem, root):
        try:
            footer = read_footer(filesystem, path)
        except (OSError, pa.ArrowInvalid):
            continue  # unreadable: not counted as done, so its rows are annotated again
        if (
            footer.run_id == run_id
            and footer.model_fingerprint == fingerprint
            and footer.stats is not None
            and len(footer.row_hashes) == footer.stats["rows"] + footer.stats["rejected"]
        ):
            done.append(footer)
    return done


def _stream(config, filesystem, files, fingerprint, run_id, rejected_columns, done, summary):
    """Start (or join) Ray and iterate over the writer's stats rows, one per file written."""
    ray = _init_ray(config)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = config.progress_bars
    print(
        f"annotating {len(files):,} file(s), {summary.rows_in - summary.resumed:,} documents "
        f"with {config.model} ({fingerprint}) -> {config.output}; "
        f"cluster {ray.cluster_resources()}",
        flush=True,
    )
    ds = build_annotate_pipeline(
        config,
        filesystem,
        files,
        config.model,
        fingerprint,
        run_id,
        rejected_columns,
        skip_row_hashes=done,
    )
    return ds.iter_rows()


def run_annotate(
    config: AnnotateConfig,
    *,
    rejected_columns: Sequence[str] = (),
    on_stats: Callable[[dict], None] | None = None,
    resume: bool = True,
) -> RunSummary:
    """Validate the inputs, run the pipeline, check the row balance, write the manifest.

    Hooks for jobs built on this one (``jobs.reprocess``): ``rejected_columns`` are
    pass-through columns also kept in rejected records; ``on_stats`` is called with
    each writer stats row (one per file written) as it arrives, so a caller can
    follow progress or stop the run by raising; ``resume=False`` annotates every
    input row even if files of this run_id exist (the caller tracks progress itself).
    """
    config.check()
    started = time.perf_counter()
    filesystem, files = expand_inputs(config.input)
    inputs = validate_inputs(
        filesystem, files, config.id_column, config.text_columns, config.passthrough
    )
    out_fs, out_root = resolve_filesystem(config.output)
    for item in inputs:
        if out_fs.type_name == filesystem.type_name and item.path.startswith(
            out_root.rstrip("/") + "/"
        ):
            raise InputError(f"output {config.output} contains input file {item.path}")
    resolve_model(config.model)  # a missing model directory fails here, before Ray starts
    run_id = config.run_id or (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    )
    fingerprint = model_fingerprint(config.model)
    summary = RunSummary(run_id=run_id, rows_in=sum(item.num_rows for item in inputs))
    earlier = (
        written_by_run(out_fs, out_root, run_id, fingerprint) if config.run_id and resume else []
    )
    resumed = merge_stats([f.stats for f in earlier])
    summary.resumed = resumed["rows"] + resumed["rejected"]
    summary.rows_out, summary.rows_rejected = resumed["rows"], resumed["rejected"]
    summary.tokens, summary.bio_repairs = resumed["tokens"], resumed["bio_repairs"]
    statuses: Counter = Counter(resumed["statuses"])
    entity_types: Counter = Counter(resumed["entity_types"])
    for item in earlier:
        rejected = f"/{REJECTED_DIR}/" in item.path
        (summary.rejected_files if rejected else summary.files).append(item.path)
    if earlier:
        print(
            f"resuming run {run_id}: {len(earlier):,} file(s) with {summary.resumed:,} "
            "documents are already written and are skipped",
            flush=True,
        )
    else:
        print(f"run {run_id} (to resume after an interruption: run_id={run_id})", flush=True)
    failpoint("annotate.before_pipeline")

    pipeline_started = time.perf_counter()
    stats_rows = ()
    if summary.resumed < summary.rows_in:  # else nothing is left: no Ray, no model
        done = np.unique(np.concatenate([f.row_hashes for f in earlier] or [np.array([], "u8")]))
        stats_rows = _stream(
            config, filesystem, files, fingerprint, run_id, rejected_columns, done, summary
        )
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
    summary.pipeline_s = time.perf_counter() - pipeline_started
    summary.statuses = dict(statuses)
    summary.entity_types = dict(entity_types)
    summary.files.sort()
    summary.rejected_files.sort()
    summary.duplicate_ids, summary.duplicate_examples = find_duplicates(
        out_fs, summary.files + summary.rejected_files
    )
    if config.remove_stale:
        _remove_stale(out_fs, out_root, set(summary.files) | set(summary.rejected_files))
    summary.wall_s = time.perf_counter() - started
    manifest = {
        "run_id": run_id,
        "model_name": config.model,
        "model_fingerprint": fingerprint,
        "config": asdict(config),
        "inputs": [asdict(item) for item in inputs],
        "summary": {
            k: v for k, v in asdict(summary).items() if k not in ("files", "rejected_files")
        },
        "balanced": summary.balanced,
        "files": summary.files,
        "rejected_files": summary.rejected_files,
    }
    failpoint("annotate.before_manifest")
    out_fs.create_dir(out_root, recursive=True)
    temporary = f"{out_root}/.tmp-{MANIFEST}"
    with out_fs.open_output_stream(temporary) as stream:
        stream.write(json.dumps(manifest, indent=2, default=str).encode())
    out_fs.move(temporary, f"{out_root}/{MANIFEST}")
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_job_args(AnnotateConfig, argv, "python -m jobs.annotate", __doc__)
        summary = run_annotate(config)
    except (ConfigError, InputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.format())
    if not summary.balanced:
        print("error: rows_in != rows_out + rows_rejected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

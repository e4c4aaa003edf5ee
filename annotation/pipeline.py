"""The one place the Ray Data annotation pipeline is built.

read Parquet (projected columns) -> [SkipWrittenRows, when resuming] ->
TokenizeStage (CPU actors) -> TokenClassifierStage (actor pool, GPUs when present)
-> SpanDecodeStage (CPU actors; with ``abbreviations``, DecodeWithAbbreviationsStage:
decoding, then abbreviation resolution) -> ParquetShardWriter (CPU tasks), which yields one
stats row per file written. jobs.annotate and jobs.reprocess both run it through
:func:`annotation.run.run_annotate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from annotation.config import AnnotateConfig
from annotation.resources import check_cluster
from annotation.resume import SkipWrittenRows
from corpora.writer import ParquetShardWriter
from ner import columns as C
from ner.abbreviation_resolution import DecodeWithAbbreviationsStage
from ner.decode import SpanDecodeStage
from ner.inference import TokenClassifierStage, default_num_threads
from ner.windowing import TokenizeStage


def build_pipeline(
    config: AnnotateConfig,
    filesystem: pafs.FileSystem,
    files: list[str],
    fingerprint: str,
    run_id: str,
    rejected_columns: Sequence[str] = (),
    skip_row_hashes: np.ndarray | None = None,
    writer: ParquetShardWriter | None = None,
):
    """The pipeline as a lazy Ray Data dataset of writer stats rows; Ray must be running.

    ``rejected_columns`` (pass-through columns) are also copied into rejected records.
    ``skip_row_hashes`` (uint64) are input rows an earlier attempt of this run
    already wrote; they are dropped right after the read. ``writer`` replaces the
    output writer (reprocessing writes the store's rows).
    """
    import ray
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    num_gpus = config.num_gpus_per_actor
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    check_cluster(ray, config, num_gpus)
    threads = config.torch_threads
    if threads <= 0 and num_gpus == 0:
        cpus = int(resources.get("CPU", 0)) or default_num_threads()
        threads = max(1, cpus // config.classifier_concurrency[1])
    light = config.cpu_stage_num_cpus
    read_columns = [config.id_column, *config.text_columns]
    read_columns += [c for c in config.passthrough if c not in read_columns]
    if config.passages_column and config.passages_column not in read_columns:
        read_columns.append(config.passages_column)

    def actors(concurrency: list[int]) -> ActorPoolStrategy:
        return ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])

    # Ray Data's default (128 MiB) made one block of a whole 20,000-abstract corpus on
    # an H200 node, so the stages ran one after another instead of side by side.
    ray.data.DataContext.get_current().target_max_block_size = config.block_mb << 20
    ds = ray.data.read_parquet(
        files, filesystem=filesystem, include_paths=True, include_row_hash=True, num_cpus=light
    ).select_columns([*read_columns, C.PATH, C.ROW_HASH])
    if skip_row_hashes is not None and len(skip_row_hashes):
        ds = ds.map_batches(
            SkipWrittenRows,
            fn_constructor_kwargs=dict(row_hashes=skip_row_hashes),
            batch_format="pyarrow",
            compute=actors(config.tokenize_concurrency),
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
            passages_column=config.passages_column,
        ),
        batch_size=config.tokenize_batch_size,
        batch_format="pyarrow",
        compute=actors(config.tokenize_concurrency),
        num_cpus=light,
        udf_modifying_row_count=False,
    )
    ds = ds.map_batches(
        TokenClassifierStage,
        fn_constructor_kwargs=dict(
            model=config.model,
            token_budget=config.token_budget,
            device=config.device if num_gpus > 0 or config.device != "auto" else "cpu",
            num_threads=threads,
            log_probs=config.decoding == "viterbi",
        ),
        batch_size=config.classify_batch_size,
        batch_format="pyarrow",
        compute=actors(config.classifier_concurrency),
        num_cpus=config.classifier_num_cpus,
        num_gpus=num_gpus,
        resources=config.classifier_resources or None,
        udf_modifying_row_count=False,
    )
    # Decoding runs in its own actor pool, a batch per classifier call, as soon as
    # each call's results arrive. As plain tasks Ray Data fused it into the write
    # tasks, whose batches are a file's worth of rows: on an H200 node the last
    # 10,000 documents were then decoded by one task after the GPU had finished.
    ds = ds.map_batches(
        DecodeWithAbbreviationsStage if config.abbreviations else SpanDecodeStage,
        fn_constructor_kwargs=dict(decoding=config.decoding, min_score=config.min_score),
        batch_size=config.classify_batch_size,
        batch_format="pyarrow",
        compute=actors(config.decode_concurrency),
        num_cpus=light,
        udf_modifying_row_count=False,
    )
    writer = writer or ParquetShardWriter(
        config.output,
        model_name=config.model,
        model_fingerprint=fingerprint,
        run_id=run_id,
        passthrough=config.passthrough,
        include_text=config.include_text,
        rejected_columns=rejected_columns,
    )
    return ds.map_batches(
        _write,
        fn_kwargs=dict(writer=writer),
        batch_size=config.write_batch_size,
        batch_format="pyarrow",
        num_cpus=light,
    )


def _write(batch: pa.Table, writer: ParquetShardWriter) -> pa.Table:
    return writer(batch)

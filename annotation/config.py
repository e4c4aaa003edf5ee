"""Typed configs of the annotation jobs, and the run ids they write.

:class:`AnnotateConfig` is jobs.annotate's; :class:`ReprocessConfig` adds the
store for jobs.reprocess. Execution settings (batch sizes, concurrency, GPUs per
actor) live here, not in the stages.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ner.decode import DECODINGS
from ner.labels import type_thresholds
from ner.windowing import WORD_UNITS
from plumbing.config import ConfigError, JobConfig, Resources

CONTENT_HASH = "content_hash"  # sha256 (128 bits, hex) of a document's text columns
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_run_id() -> str:
    """The one run-id maker: UTC time to the second plus a random suffix, sortable by time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class AnnotateConfig(JobConfig):
    """Settings of the annotation job; execution settings live here, not in the stages."""

    input: list[str] = Field(
        [], description="Parquet files or directories, local paths or URIs (s3://, gs://, ...)"
    )
    output: str = Field(
        "outputs/annotations",
        description="output directory or URI; _rejected/ and _manifest.json go inside",
    )
    model: str = Field(
        "outputs/model", description="trained token-classifier directory (or a cached hub id)"
    )
    id_column: str = Field(
        "doc_id", description="input column with the document id (written as the string doc_id)"
    )
    text_columns: list[str] = Field(
        ["text"],
        description="input text columns, joined with `separator`; offsets are into the joined text",
    )
    separator: str = Field(
        " ",
        description="string between text columns (a space: PubTator's title + abstract offsets)",
    )
    passthrough: list[str] = Field([], description="input columns copied unchanged to the output")
    passages_column: str = Field(
        "",
        description="input column of passages (section_type, title, start, end) over the one text "
        "column, as jobs.pmc_to_parquet writes `passages`: each entity gets its passage's section "
        "and none spans two passages; empty = none (sections null)",
    )
    include_text: bool = Field(False, description="also write the joined text as column `text`")
    max_length: int = Field(512, description="window length in sub-tokens, special tokens included")
    stride: int = Field(
        128, description="sub-tokens shared by consecutive windows of a long document"
    )
    word_unit: Literal[WORD_UNITS] = Field(
        "tokenizer",
        description="what a word is for decoding: 'tokenizer' (its pre-tokenizer, splits punctuation) or 'whitespace'",
    )
    decoding: Literal[DECODINGS] = Field(
        "viterbi",
        description="'viterbi': the most probable valid BIO label sequence; 'argmax': each word's "
        "best label, an I-X that opens a mention read as B-X",
    )
    # On by default: on the 500 BC5CDR sample abstracts it raised the demo model's Chemical
    # F1, strict 0.2824 -> 0.2985 (benchmarks/results/abbreviations-2026-12-07-vm.txt).
    abbreviations: bool = Field(
        True,
        description="after decoding, give every occurrence of a short form the document defines "
        "('5-fluorouracil (5-FU)') its long form's type, or drop its label where the long form is "
        "no entity (ner.abbreviation_resolution); entities so changed have via_abbreviation true",
    )
    min_score: dict[str, float] = Field(
        {}, description="per type, mentions scoring below this are dropped, e.g. {Chemical: 0.6}"
    )
    max_chars: int = Field(
        1_000_000, description="longer documents are rejected (reason recorded), not annotated"
    )
    tokenize_batch_size: int = Field(64, description="documents per tokenizer call", ge=1)
    classify_batch_size: int = Field(
        64,
        description="documents per classifier call; their windows are sorted by length",
        ge=1,
    )
    token_budget: int = Field(
        4096,
        description="sub-tokens per forward pass, padding included: length-sorted windows are packed "
        "so that rows x longest row <= token_budget (a longer window runs alone)",
        ge=1,
    )
    write_batch_size: int = Field(2000, description="documents per output file (at most)", ge=1)
    tokenize_concurrency: list[int] = Field([1, 2], description="tokenizer actors: [min, max]")
    classifier_concurrency: list[int] = Field(
        [1, 1], description="classifier actors: [min, max] (autoscaling between them)"
    )
    decode_concurrency: list[int] = Field([1, 2], description="span decoder actors: [min, max]")
    num_gpus_per_actor: float | None = Field(
        None, description="GPUs per classifier actor; empty = 1 when the cluster has GPUs, else 0"
    )
    classifier_num_cpus: float = Field(
        0.5,
        description="CPUs reserved per classifier actor (bookkeeping: torch_threads sets its threads; "
        "Ray Data's file listing needs 1 free CPU, so keep the sum of reservations below the cluster's)",
    )
    classifier_resources: Resources = Field(
        {},
        description="custom Ray resources each classifier actor needs, to place it on the nodes that "
        "have them (started with `ray start --resources='{\"big_gpu\": 1}'`), e.g. {big_gpu: 1}",
    )
    cpu_stage_num_cpus: float = Field(
        0.25, description="CPUs reserved per read, tokenize, decode and write worker"
    )
    resource_wait_s: float = Field(
        0,
        description="how long to wait for an autoscaler to add nodes that the actors need "
        "(GPUs, CPUs); 0 = fail at once when no node could ever host them",
    )
    block_mb: int = Field(
        8,
        description="target size in MiB of the blocks between stages: small enough that the stages "
        "overlap and every core gets work, large enough that per-block costs stay small",
        ge=1,
    )
    heap_trim_s: float = Field(
        10,
        description="every this many seconds, each worker of a new local cluster hands its freed heap "
        "back to the OS (glibc malloc_trim; Arrow then allocates from the same heap); "
        "0 = off. Long runs otherwise keep hundreds of MiB per worker",
        ge=0,
    )
    torch_threads: int = Field(
        0,
        description="intra-op threads per CPU classifier actor; 0 = cluster CPUs / max classifier actors",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' (cuda when present), 'cpu' or 'cuda'"
    )
    run_id: str = Field(
        "",
        description="id written with every row; empty = UTC time + random suffix. Rerunning an "
        "interrupted run with its run_id skips the documents it already wrote",
    )
    ray_address: str = Field(
        "", description="Ray cluster address; empty = RAY_ADDRESS or a new local cluster"
    )
    num_cpus: int = Field(0, description="CPUs of a new local cluster (0 = all)")
    object_store_mb: int = Field(
        0, description="object store of a new local cluster in MiB (0 = Ray's default)"
    )
    dashboard: bool = Field(
        True,
        description="start Ray's dashboard (port 8265) with a new local cluster; false starts faster",
    )
    progress_bars: bool = Field(True, description="show Ray Data's progress bars")
    verbose: bool = Field(
        False,
        description="show Ray's own log lines on the console (they always go to the log files)",
    )
    remove_stale: bool = Field(
        True, description="delete output Parquet files of earlier runs that this run did not write"
    )

    @field_validator("min_score")
    @classmethod
    def _known_types(cls, value: dict[str, float]) -> dict[str, float]:
        type_thresholds(value)  # its ValueError names the unknown types
        return value

    @field_validator("tokenize_concurrency", "classifier_concurrency", "decode_concurrency")
    @classmethod
    def _min_max(cls, value: list[int], info) -> list[int]:
        if len(value) != 2 or not 1 <= value[0] <= value[1]:
            raise ConfigError(
                f"{info.field_name} must be [min, max] with 1 <= min <= max, got {value}"
            )
        return value

    @field_validator("text_columns")
    @classmethod
    def _some_text(cls, value: list[str]) -> list[str]:
        if not value:
            raise ConfigError("text_columns must name at least one column")
        return value

    @model_validator(mode="after")
    def _passages_index_one_column(self) -> AnnotateConfig:
        if self.passages_column and len(self.text_columns) != 1:
            raise ConfigError(
                f"passages_column={self.passages_column} indexes one text column; "
                f"text_columns={self.text_columns} has {len(self.text_columns)}"
            )
        return self

    @model_validator(mode="after")
    def _gpus_need_a_gpu_device(self) -> AnnotateConfig:
        if self.device == "cpu" and (self.num_gpus_per_actor or 0) > 0:
            # The actor would hold a GPU and run the model on its CPU share.
            raise ConfigError(
                f"num_gpus_per_actor={self.num_gpus_per_actor:g} with device=cpu: the actors "
                "would reserve GPUs and leave them idle; use configs/annotate_gpu.yaml or device=cuda"
            )
        return self


# Settings that shape the annotation rows: a change re-annotates every document.
ROW_SETTINGS = (
    "id_column",
    "text_columns",
    "separator",
    "passthrough",
    "passages_column",
    "include_text",
    "max_length",
    "stride",
    "word_unit",
    "decoding",
    "abbreviations",
    "min_score",
    "max_chars",
)


class ReprocessConfig(AnnotateConfig):
    """The annotation settings of jobs.annotate, plus the store; ``output`` is the store's business."""

    store: str = Field(
        "outputs/store",
        description="the store: a Delta Lake table, a local directory or an s3:// URI (annotation/store.py)",
    )
    staging: str = Field(
        "",
        description="where a run keeps its to-do input and annotated files until its commit, on the "
        "store's filesystem and reachable from every node; empty = <store>/_staging",
    )
    storage_options: dict[str, str] = Field(
        {},
        description="delta-rs storage options for an object store, e.g. {AWS_REGION: eu-west-1, "
        "AWS_ENDPOINT_URL: ..., aws_conditional_put: etag}; credentials from the environment",
    )
    output: str = Field("", description="not used: annotations go to the store's table")
    remove_stale: bool = Field(True, description="not used: the table's log says which files count")
    run_id: str = Field(
        "",
        description="run id, written with every new row and in the commit; empty = resume the newest "
        "crashed run, else UTC time + random suffix",
    )
    keep_versions: int = Field(
        10,
        description="table versions written by runs that stay readable (time travel); after each commit "
        "`vacuum` deletes the files only older versions use",
        ge=1,
    )
    target_file_mb: int = Field(
        32,
        description="data file size cap: a commit rewrites only the files holding a changed row",
        ge=1,
    )
    plan_only: bool = Field(
        False,
        description="print the plan (new, changed, deleted, ...) and exit: no Ray, no model, no commit",
    )
    pubmed: bool = Field(
        False,
        description="input is jobs.pubmed_to_parquet output directories (baseline + update files): the "
        "corpus is PubMed's current state, later files' records replacing earlier ones and "
        "DeleteCitation removing PMIDs (corpora/pubmed_updates.py); needs id_column=pmid",
    )

    @model_validator(mode="after")
    def _reprocess_settings(self) -> ReprocessConfig:
        if self.output:
            raise ConfigError("reprocess writes into `store`; leave `output` unset")
        if not self.remove_stale:
            raise ConfigError("remove_stale does not apply to reprocess")
        if not self.store:
            raise ConfigError("store must name a directory")
        if self.run_id and not RUN_ID_PATTERN.match(self.run_id):
            raise ConfigError(f"run_id {self.run_id!r}: use letters, digits, '.', '_' and '-'")
        if self.pubmed and self.id_column != "pmid":
            raise ConfigError(f"pubmed=true reads citations by pmid, not {self.id_column!r}")
        if CONTENT_HASH in (self.id_column, *self.text_columns, *self.passthrough):
            raise ConfigError(f"column name {CONTENT_HASH!r} is reserved by reprocess")
        return self

    def annotate_config(self, input: list[str], output: str, run_id: str) -> AnnotateConfig:
        """The jobs.annotate config for this run's to-do documents."""
        values = {name: getattr(self, name) for name in AnnotateConfig.model_fields}
        values.update(
            input=input,
            output=output,
            run_id=run_id,
            passthrough=[*self.passthrough, CONTENT_HASH],
            remove_stale=False,  # a resumed run keeps the files its first attempt wrote
        )
        return AnnotateConfig(**values)

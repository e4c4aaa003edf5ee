"""Typed configs of the annotation jobs, and the run ids they write.

:class:`AnnotateConfig` is jobs.annotate's; :class:`ReprocessConfig` adds the
store for jobs.reprocess. Execution settings (batch sizes, concurrency, GPUs per
actor) live here, not in the stages.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from ner.decode import DECODINGS
from ner.labels import type_thresholds
from ner.windowing import WORD_UNITS
from plumbing.config import ConfigError, option

CONTENT_HASH = "content_hash"  # sha256 (128 bits, hex) of a document's text columns
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_run_id() -> str:
    """The one run-id maker: UTC time to the second plus a random suffix, sortable by time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


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
    decoding: str = option(
        "viterbi",
        "'viterbi': the most probable valid BIO label sequence; 'argmax': each word's "
        "best label, an I-X that opens a mention read as B-X",
    )
    min_score: dict[str, float] = option(
        {}, "per type, mentions scoring below this are dropped, e.g. {Chemical: 0.6}"
    )
    max_chars: int = option(
        1_000_000, "longer documents are rejected (reason recorded), not annotated"
    )
    tokenize_batch_size: int = option(64, "documents per tokenizer call")
    classify_batch_size: int = option(
        64, "documents per classifier call; their windows are sorted by length"
    )
    token_budget: int = option(
        4096,
        "sub-tokens per forward pass, padding included: length-sorted windows are packed "
        "so that rows x longest row <= token_budget (a longer window runs alone)",
    )
    write_batch_size: int = option(2000, "documents per output file (at most)")
    tokenize_concurrency: list[int] = option([1, 2], "tokenizer actors: [min, max]")
    classifier_concurrency: list[int] = option(
        [1, 1], "classifier actors: [min, max] (autoscaling between them)"
    )
    decode_concurrency: list[int] = option([1, 2], "span decoder actors: [min, max]")
    num_gpus_per_actor: float | None = option(
        None, "GPUs per classifier actor; empty = 1 when the cluster has GPUs, else 0"
    )
    classifier_num_cpus: float = option(
        0.5,
        "CPUs reserved per classifier actor (bookkeeping: torch_threads sets its threads; "
        "Ray Data's file listing needs 1 free CPU, so keep the sum of reservations below the cluster's)",
    )
    classifier_resources: dict[str, float] = option(
        {},
        "custom Ray resources each classifier actor needs, to place it on the nodes that "
        "have them (started with `ray start --resources='{\"big_gpu\": 1}'`), e.g. {big_gpu: 1}",
    )
    cpu_stage_num_cpus: float = option(
        0.25, "CPUs reserved per read, tokenize, decode and write worker"
    )
    resource_wait_s: float = option(
        0,
        "how long to wait for an autoscaler to add nodes that the actors need "
        "(GPUs, CPUs); 0 = fail at once when no node could ever host them",
    )
    block_mb: int = option(
        8,
        "target size in MiB of the blocks between stages: small enough that the stages "
        "overlap and every core gets work, large enough that per-block costs stay small",
    )
    heap_trim_s: float = option(
        10,
        "every this many seconds, each worker of a new local cluster hands its freed heap "
        "back to the OS (glibc malloc_trim; Arrow then allocates from the same heap); "
        "0 = off. Long runs otherwise keep hundreds of MiB per worker",
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
    dashboard: bool = option(
        True, "start Ray's dashboard (port 8265) with a new local cluster; false starts faster"
    )
    progress_bars: bool = option(True, "show Ray Data's progress bars")
    verbose: bool = option(
        False, "show Ray's own log lines on the console (they always go to the log files)"
    )
    remove_stale: bool = option(
        True, "delete output Parquet files of earlier runs that this run did not write"
    )

    def check(self) -> None:
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {', '.join(DECODINGS)}")
        try:
            type_thresholds(self.min_score)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.word_unit not in WORD_UNITS:
            raise ConfigError(f"word_unit must be one of {', '.join(WORD_UNITS)}")
        for name in ("tokenize_concurrency", "classifier_concurrency", "decode_concurrency"):
            value = getattr(self, name)
            if len(value) != 2 or not 1 <= value[0] <= value[1]:
                raise ConfigError(f"{name} must be [min, max] with 1 <= min <= max, got {value}")
        if not self.text_columns:
            raise ConfigError("text_columns must name at least one column")
        for name in (
            "tokenize_batch_size",
            "classify_batch_size",
            "token_budget",
            "write_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.heap_trim_s < 0:
            raise ConfigError("heap_trim_s must be 0 (off) or a number of seconds")
        if self.block_mb < 1:
            raise ConfigError("block_mb must be at least 1")
        if any(not v > 0 for v in self.classifier_resources.values()):
            raise ConfigError("classifier_resources: each amount must be > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cpu" and (self.num_gpus_per_actor or 0) > 0:
            # The actor would hold a GPU and run the model on its CPU share.
            raise ConfigError(
                f"num_gpus_per_actor={self.num_gpus_per_actor:g} with device=cpu: the actors "
                "would reserve GPUs and leave them idle; use configs/annotate_gpu.yaml or device=cuda"
            )


# Settings that shape the annotation rows: a change re-annotates every document.
ROW_SETTINGS = (
    "id_column",
    "text_columns",
    "separator",
    "passthrough",
    "include_text",
    "max_length",
    "stride",
    "word_unit",
    "decoding",
    "min_score",
    "max_chars",
)


@dataclass
class ReprocessConfig(AnnotateConfig):
    """The annotation settings of jobs.annotate, plus the store; ``output`` is the store's business."""

    store: str = option(
        "outputs/store",
        "the store: a Delta Lake table, a local directory or an s3:// URI (annotation/store.py)",
    )
    staging: str = option(
        "",
        "where a run keeps its to-do input and annotated files until its commit, on the "
        "store's filesystem and reachable from every node; empty = <store>/_staging",
    )
    storage_options: dict[str, str] = option(
        {},
        "delta-rs storage options for an object store, e.g. {AWS_REGION: eu-west-1, "
        "AWS_ENDPOINT_URL: ..., aws_conditional_put: etag}; credentials from the environment",
    )
    output: str = option("", "not used: annotations go to the store's table")
    remove_stale: bool = option(True, "not used: the table's log says which files count")
    run_id: str = option(
        "",
        "run id, written with every new row and in the commit; empty = resume the newest "
        "crashed run, else UTC time + random suffix",
    )
    keep_versions: int = option(
        10,
        "table versions written by runs that stay readable (time travel); after each commit "
        "`vacuum` deletes the files only older versions use",
    )
    target_file_mb: int = option(
        32, "data file size cap: a commit rewrites only the files holding a changed row"
    )
    plan_only: bool = option(
        False, "print the plan (new, changed, deleted, ...) and exit: no Ray, no model, no commit"
    )
    pubmed: bool = option(
        False,
        "input is jobs.pubmed_to_parquet output directories (baseline + update files): the "
        "corpus is PubMed's current state, later files' records replacing earlier ones and "
        "DeleteCitation removing PMIDs (corpora/pubmed_updates.py); needs id_column=pmid",
    )

    def check(self) -> None:
        super().check()
        if self.output:
            raise ConfigError("reprocess writes into `store`; leave `output` unset")
        if not self.remove_stale:
            raise ConfigError("remove_stale does not apply to reprocess")
        if not self.store:
            raise ConfigError("store must name a directory")
        if self.keep_versions < 1:
            raise ConfigError("keep_versions must be at least 1")
        if self.target_file_mb < 1:
            raise ConfigError("target_file_mb must be at least 1")
        if self.run_id and not RUN_ID_PATTERN.match(self.run_id):
            raise ConfigError(f"run_id {self.run_id!r}: use letters, digits, '.', '_' and '-'")
        if self.pubmed and self.id_column != "pmid":
            raise ConfigError(f"pubmed=true reads citations by pmid, not {self.id_column!r}")
        if CONTENT_HASH in (self.id_column, *self.text_columns, *self.passthrough):
            raise ConfigError(f"column name {CONTENT_HASH!r} is reserved by reprocess")

    def annotate_config(self, input: list[str], output: str, run_id: str) -> AnnotateConfig:
        """The jobs.annotate config for this run's to-do documents."""
        values = {f.name: getattr(self, f.name) for f in fields(AnnotateConfig)}
        values.update(
            input=input,
            output=output,
            run_id=run_id,
            passthrough=[*self.passthrough, CONTENT_HASH],
            remove_stale=False,  # a resumed run keeps the files its first attempt wrote
        )
        return AnnotateConfig(**values)

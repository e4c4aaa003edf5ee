"""The training jobs' configs: the dataset build, and the published CRAFT recipe and how to run it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ner.viterbi import DECODINGS
from plumbing.config import JobConfig, Resources
from training.augment import DEFAULT_RATE


class TrainConfig(JobConfig):
    """Everything one training run needs; YAML keys and ``key=value`` overrides map onto it."""

    # model and data
    base_model: str = Field(
        "embedded", description="hub id, local directory, 'embedded' (MiniLM) or 'tiny-random-bert'"
    )
    dataset: str = Field(
        "outputs/dataset",
        description="folder (or URI) with the train.parquet and devel.parquet that "
        "jobs.build_dataset writes",
    )
    use_augmented: bool = Field(
        True, description="train on original plus augmented sentences (else original only)"
    )
    max_length: int = Field(
        512, description="longest input in sub-tokens; longer sentences are truncated", gt=0
    )
    label_all_subtokens: bool = Field(
        False,
        description="train every sub-token (B- becomes I- after the first) instead of the first only",
    )
    max_train_sentences: int | None = Field(
        None, description="train on a seeded random sample of N sentences (demos, smoke runs)"
    )
    max_eval_sentences: int | None = Field(
        None, description="evaluate on only the first N devel sentences (smoke runs)"
    )
    # optimisation (the published recipe)
    learning_rate: float = Field(3e-5, description="peak learning rate of AdamW", gt=0)
    batch_size: int = Field(
        8,
        description="sentences per batch per worker; the global batch is batch_size x num_workers",
        gt=0,
    )
    eval_batch_size: int = Field(64, description="sentences per evaluation batch per worker", gt=0)
    decoding: Literal[DECODINGS] = Field(
        "viterbi",
        description="how devel predictions are decoded, as in the annotation job: 'viterbi' (most "
        "probable valid BIO sequence) or 'argmax'",
    )
    epochs: int = Field(4, description="passes over the training data", gt=0)
    warmup_ratio: float = Field(
        0.0, description="share of optimizer steps spent warming up linearly", ge=0.0, lt=1.0
    )
    weight_decay: float = Field(
        0.0, description="AdamW weight decay (not applied to biases and LayerNorm)"
    )
    max_grad_norm: float = Field(1.0, description="gradient clipping norm; 0 turns clipping off")
    grad_accum_steps: int = Field(1, description="batches accumulated per optimizer step", gt=0)
    group_by_length: bool = Field(True, description="batch sentences of similar length together")
    seed: int = Field(42, description="seed for initialisation, shuffling and dropout")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="auto (bf16, else fp16, on GPU; none on CPU), bf16, fp16 or no"
    )
    max_steps_per_epoch: int | None = Field(
        None, description="stop each epoch after N batches (smoke runs)"
    )
    # execution
    num_workers: int = Field(
        1,
        description="Ray Train workers (DDP when more than one); on CPUs one worker with all cores",
        gt=0,
    )
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: int = Field(1, description="CPUs reserved per worker", gt=0)
    worker_resources: Resources = Field(
        {},
        description="custom Ray resources each worker needs, to place the workers on the nodes that "
        "have them (started with `ray start --resources='{\"trainer\": 1}'`), e.g. {trainer: 1}",
    )
    torch_threads: int | None = Field(
        None, description="intra-op threads per worker (default: cpus_per_worker)"
    )
    # storage, checkpoints, fault tolerance
    storage_path: str = Field(
        "outputs/train", description="where runs, checkpoints and exports live (local path or URI)"
    )
    name: str = Field("craft-ner", description="run name; rerunning with the same name resumes it")
    num_to_keep: int = Field(
        2, description="checkpoints kept, best by devel F1 (the latest is always kept)"
    )
    max_failures: int = Field(
        1, description="worker-group restarts from the last checkpoint before giving up", ge=-1
    )
    export_dir: str | None = Field(
        None, description="where the best model is exported (default: <storage_path>/<name>/model)"
    )
    # console
    verbose: bool = Field(
        False,
        description="show Ray's, Ray Train's and Hugging Face's own logs on the console "
        "(they are always in Ray's session log folder)",
    )


class BuildDatasetConfig(JobConfig):
    """Settings of jobs.build_dataset: CRAFT-IOB + ontologies -> Parquet splits."""

    data_dir: str | None = Field(
        None,
        description="folder with train.tsv, devel.tsv[, test.tsv] (default: $CRAFT_IOB_DIR, "
        "data/craft-iob, ../shared/data/craft-iob)",
    )
    ontology_dir: str | None = Field(
        None, description="folder with CL.obo and SO.obo (default: beside the CRAFT-IOB folder)"
    )
    out: str = Field("outputs/dataset", description="output folder")
    seed: int = Field(42, description="seed of the augmentation")
    rate: float = Field(
        DEFAULT_RATE, description="share of training mentions replaced", ge=0.0, le=1.0
    )
    augment: bool = Field(True, description="also write the augmented copy of train")
    lexicon: dict[str, str] = Field(
        {},
        description="replace a type's lexicon with a file of surface forms, one a line: "
        "{TYPE: FILE}, or lexicon.TYPE=FILE",
    )

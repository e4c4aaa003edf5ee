"""The training job's config: the published CRAFT recipe, and how to run it."""

from __future__ import annotations

from dataclasses import dataclass

from ner.viterbi import DECODINGS
from plumbing.config import ConfigError, option


@dataclass
class TrainConfig:
    """Everything one training run needs; YAML keys and ``key=value`` overrides map onto it."""

    # model and data
    base_model: str = option(
        "embedded", "hub id, local directory, 'embedded' (MiniLM) or 'tiny-random-bert'"
    )
    data_dir: str | None = option(
        None, "CRAFT-IOB folder (default: $CRAFT_IOB_DIR, data/craft-iob, ../shared/data/craft-iob)"
    )
    ontology_dir: str | None = option(
        None, "folder with CL.obo and SO.obo (default: beside the CRAFT-IOB folder)"
    )
    use_augmented: bool = option(True, "train on original plus augmented sentences")
    augment_rate: float = option(0.2, "share of training mentions replaced in the augmented copy")
    augment_seed: int = option(42, "seed of the augmentation")
    max_length: int = option(512, "longest input in sub-tokens; longer sentences are truncated")
    label_all_subtokens: bool = option(
        False, "train every sub-token (B- becomes I- after the first) instead of the first only"
    )
    max_train_sentences: int | None = option(
        None, "train on a seeded random sample of N sentences (demos, smoke runs)"
    )
    max_eval_sentences: int | None = option(
        None, "evaluate on only the first N devel sentences (smoke runs)"
    )
    # optimisation (the published recipe)
    learning_rate: float = option(3e-5, "peak learning rate of AdamW")
    batch_size: int = option(
        8, "sentences per batch per worker; the global batch is batch_size x num_workers"
    )
    eval_batch_size: int = option(64, "sentences per evaluation batch per worker")
    decoding: str = option(
        "viterbi",
        "how devel predictions are decoded, as in the annotation job: 'viterbi' (most "
        "probable valid BIO sequence) or 'argmax'",
    )
    epochs: int = option(4, "passes over the training data")
    warmup_ratio: float = option(0.0, "share of optimizer steps spent warming up linearly")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and LayerNorm)")
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 turns clipping off")
    grad_accum_steps: int = option(1, "batches accumulated per optimizer step")
    group_by_length: bool = option(True, "batch sentences of similar length together")
    seed: int = option(42, "seed for initialisation, shuffling and dropout")
    mixed_precision: str = option(
        "auto", "auto (bf16, else fp16, on GPU; none on CPU), bf16, fp16 or no"
    )
    max_steps_per_epoch: int | None = option(None, "stop each epoch after N batches (smoke runs)")
    # execution
    num_workers: int = option(
        1, "Ray Train workers (DDP when more than one); on CPUs one worker with all cores"
    )
    use_gpu: bool = option(False, "one GPU per worker")
    cpus_per_worker: int = option(1, "CPUs reserved per worker")
    worker_resources: dict[str, float] = option(
        {},
        "custom Ray resources each worker needs, to place the workers on the nodes that "
        "have them (started with `ray start --resources='{\"trainer\": 1}'`), e.g. {trainer: 1}",
    )
    torch_threads: int | None = option(
        None, "intra-op threads per worker (default: cpus_per_worker)"
    )
    # storage, checkpoints, fault tolerance
    storage_path: str = option(
        "outputs/train", "where runs, checkpoints and exports live (local path or URI)"
    )
    name: str = option("craft-ner", "run name; rerunning with the same name resumes it")
    num_to_keep: int = option(2, "checkpoints kept, best by devel F1 (the latest is always kept)")
    max_failures: int = option(1, "worker-group restarts from the last checkpoint before giving up")
    export_dir: str | None = option(
        None, "where the best model is exported (default: <storage_path>/<name>/model)"
    )
    # console
    verbose: bool = option(
        False,
        "show Ray's, Ray Train's and Hugging Face's own logs on the console "
        "(they are always in Ray's session log folder)",
    )

    def __post_init__(self) -> None:
        positive = (
            "learning_rate",
            "batch_size",
            "eval_batch_size",
            "epochs",
            "grad_accum_steps",
            "num_workers",
            "cpus_per_worker",
            "max_length",
        )
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ConfigError(
                f"mixed_precision must be auto, bf16, fp16 or no, got {self.mixed_precision!r}"
            )
        if self.decoding not in DECODINGS:
            raise ConfigError(
                f"decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}"
            )
        if any(not v > 0 for v in self.worker_resources.values()):
            raise ConfigError("worker_resources: each amount must be > 0")
        if self.max_failures < -1:
            raise ConfigError("max_failures must be -1 (unlimited) or more")

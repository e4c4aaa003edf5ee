"""Export a checkpoint as a plain Hugging Face model directory with a model card.

The directory loads with ``transformers.pipeline("token-classification", model=DIR)``
and nothing from this project.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ner.labels import ENTITY_TYPES
from plumbing.atomic import write_bytes_atomic
from training.checkpoints import MODEL_SUBDIR
from training.config import TrainConfig
from training.metrics import per_type_table


def export_checkpoint(
    checkpoint, metrics: dict, history: list[dict], cfg: TrainConfig, out_dir: str | Path
) -> Path:
    """Copy a checkpoint's model into ``out_dir`` with ``metrics.json`` and ``README.md``."""
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with checkpoint.as_directory() as directory:
        shutil.copytree(Path(directory) / MODEL_SUBDIR, staging)
    payload = {
        "best": metrics,
        "history": history,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (staging / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    (staging / "README.md").write_text(model_card(metrics, history, cfg))
    # Replace the previous export in one rename so a reader never sees half of one.
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def model_card(metrics: dict, history: list[dict], cfg: TrainConfig) -> str:
    epochs = "\n".join(
        f"| {int(m['epoch'])} | {m['train_loss']:.4f} | {m['devel_loss']:.4f} | {m['devel_f1']:.4f} | {m['devel_strict_f1']:.4f} |"
        for m in history
    )
    config = yaml.safe_dump(
        {k: v for k, v in cfg.model_dump().items() if k != "verbose"}, sort_keys=False
    )
    return f"""---
library_name: transformers
pipeline_tag: token-classification
tags: [biomedical, ner, craft]
---

# CRAFT entity tagger ({cfg.base_model})

A BERT token classifier fine-tuned with Ray Train on the CRAFT corpus
(CRAFT-IOB{", original plus entity-replacement augmentation" if cfg.use_augmented else ""})
for six entity types: {", ".join(ENTITY_TYPES)} (BIO tags).

```python
from transformers import pipeline
ner = pipeline("token-classification", model="path/to/this/directory", aggregation_strategy="simple")
ner("Mouse retinal ganglion cells express p53.")
```

## Devel scores (best epoch: {int(metrics["epoch"])})

Entity-level seqeval, default mode and strict IOB2; token accuracy {metrics["devel_token_accuracy"]:.4f}.

{per_type_table(metrics)}

## Epochs

| epoch | train loss | devel loss | devel F1 | strict F1 |
|---:|---:|---:|---:|---:|
{epochs}

## Training config

```yaml
{config}```
"""


def update_model_card(model_dir: str | Path, section: str) -> Path:
    """Put ``section`` (Markdown opening with its own ``## `` heading) into ``model_dir``'s card.

    A section of the card with the same heading is replaced, else ``section`` is
    appended; the rest of the card is kept. For figures computed after the export
    (jobs.evaluate's score thresholds, which need a Ray Data annotation run).
    """
    path = Path(model_dir) / "README.md"
    card = path.read_text(encoding="utf-8") if path.is_file() else ""
    heading = section.splitlines()[0].strip()
    lines = card.splitlines()
    if heading in (line.strip() for line in lines):
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = [*section.rstrip("\n").splitlines(), ""]
        card = "\n".join(lines).rstrip("\n") + "\n"
    else:
        card = card.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    write_bytes_atomic(path, card.encode("utf-8"))
    return path

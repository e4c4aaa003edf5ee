"""Checks that need no Ray: config, and the validation preamble failing before any model work."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation import run
from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from corpora.corpus import InputError
from jobs import annotate
from plumbing.config import ConfigError, load_config


@pytest.fixture
def corpus(tmp_path):
    pq.write_table(
        pa.table({"pmid": ["1"], "title": ["t"], "abstract": ["a"]}), tmp_path / "a.parquet"
    )
    pq.write_table(pa.table({"pmid": ["2"], "title": ["t"]}), tmp_path / "b.parquet")
    return tmp_path


def _no_model_work(monkeypatch):
    """Fail the test if anything past validation runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("model or Ray work started before the inputs were validated")

    monkeypatch.setattr(run, "model_fingerprint", forbidden)
    monkeypatch.setattr(run, "init_ray", forbidden)


def test_missing_text_column_fails_before_model_work(corpus, monkeypatch):
    _no_model_work(monkeypatch)
    config = AnnotateConfig(
        input=[str(corpus)],
        output=str(corpus / "out"),
        model="/no/such/model",
        id_column="pmid",
        text_columns=["title", "abstract"],
    )
    with pytest.raises(InputError, match=r"b\.parquet has no text column 'abstract'"):
        run_annotate(config)


def test_unreadable_file_fails_before_model_work(corpus, monkeypatch):
    _no_model_work(monkeypatch)
    (corpus / "c.parquet").write_bytes(b"PAR1 garbage")
    config = AnnotateConfig(
        input=[str(corpus / "a.parquet"), str(corpus / "c.parquet")],
        output=str(corpus / "out"),
        id_column="pmid",
        text_columns=["title"],
    )
    with pytest.raises(InputError, match=r"c\.parquet is not readable"):
        run_annotate(config)


def test_missing_model_fails_before_ray(corpus, monkeypatch):
    monkeypatch.setattr(run, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    config = AnnotateConfig(
        input=[str(corpus / "a.parquet")],
        output=str(corpus / "out"),
        model=str(corpus / "nope"),
        id_column="pmid",
        text_columns=["title"],
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_annotate(config)


def test_output_may_not_contain_the_input(corpus):
    config = AnnotateConfig(
        input=[str(corpus / "a.parquet")],
        output=str(corpus),
        id_column="pmid",
        text_columns=["title"],
    )
    with pytest.raises(InputError, match="contains input file"):
        run_annotate(config)


def test_cli_reports_bad_input_with_exit_code_2(corpus, capsys):
    code = annotate.main(
        [
            f"input={corpus}",
            f"output={corpus / 'out'}",
            "id_column=pmid",
            "text_columns=[title, abstract]",
        ]
    )
    assert code == 2
    assert "b.parquet has no text column 'abstract'" in capsys.readouterr().err


def test_config_file_and_checks(tmp_path):
    config = load_config(AnnotateConfig, "configs/annotate_cpu.yaml", ["input=x", "stride=16"])
    assert config.stride == 16 and config.input == ["x"]
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(AnnotateConfig, None, ["strides=3"])
    with pytest.raises(ConfigError, match="classifier_concurrency"):
        AnnotateConfig(classifier_concurrency=[2, 1])
    with pytest.raises(ConfigError, match="decode_concurrency"):
        AnnotateConfig(decode_concurrency=[0, 2])
    with pytest.raises(ConfigError, match="word_unit"):
        AnnotateConfig(word_unit="chars")
    with pytest.raises(ConfigError, match="token_budget must be at least 1"):
        AnnotateConfig(token_budget=0)


def test_the_old_micro_batch_size_key_is_an_error_that_names_its_successor(tmp_path):
    """Windows per forward pass became padded tokens per forward pass: no silent default."""
    old = tmp_path / "old.yaml"
    old.write_text("micro_batch_size: 32\n")
    with pytest.raises(ConfigError, match="unknown key.*micro_batch_size.*token_budget"):
        load_config(AnnotateConfig, old)


def test_gpus_with_a_cpu_device_is_a_config_error():
    """The README's old GPU command: annotate_cpu.yaml's device=cpu won over num_gpus_per_actor."""
    with pytest.raises(ConfigError, match="num_gpus_per_actor=1 with device=cpu"):
        load_config(AnnotateConfig, "configs/annotate_cpu.yaml", ["num_gpus_per_actor=1"])
    load_config(AnnotateConfig, "configs/annotate_gpu.yaml")  # GPUs on cuda: fine
    AnnotateConfig(device="cpu", num_gpus_per_actor=0)
    with pytest.raises(ConfigError, match="device must be"):
        AnnotateConfig(device="gpu")


def test_a_bad_value_is_refused_when_the_config_is_loaded(tmp_path, capsys):
    """Checked as it is built, not when a run prepares: no input is read, no Ray starts."""
    path = tmp_path / "annotate.yaml"
    path.write_text("decoding: greedy\n")
    with pytest.raises(ConfigError, match="decoding must be 'viterbi' or 'argmax', got 'greedy'"):
        load_config(AnnotateConfig, path)
    with pytest.raises(ConfigError, match="min_score names unknown type"):
        load_config(AnnotateConfig, None, ["min_score={Drug: 0.5}"])
    from jobs.annotate import main

    assert main(["--config", str(path), f"input={tmp_path / 'missing'}"]) == 2
    assert "decoding must be 'viterbi' or 'argmax'" in capsys.readouterr().err

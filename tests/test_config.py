import importlib
from typing import Any, Literal

import pytest
from pydantic import Field

from plumbing.config import ConfigError, JobConfig, load_config, parse_job_args


class DemoConfig(JobConfig):
    lr: float = Field(3e-5, description="learning rate", gt=0)
    epochs: int = Field(4, description="passes over the data", ge=1)
    name: str = Field("run", description="run name")
    bf16: bool = Field(False, description="mixed precision")
    columns: list[str] = Field(["title"], description="text columns")
    limit: int | None = Field(None, description="cap on rows")
    device: Literal["auto", "cpu"] = Field("auto", description="where to run")
    inner: dict[str, Any] = Field({}, description="another job's keys")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# python -m jobs.demo --config c.yaml\nlr: 1e-4\nepochs: 2\n")
    cfg = load_config(DemoConfig, path, ["epochs=3", "columns=[title, abstract]", "limit=10"])
    assert cfg == DemoConfig(lr=1e-4, epochs=3, columns=["title", "abstract"], limit=10)


def test_yaml_scalars_read_as_before(tmp_path):
    cfg = load_config(DemoConfig, None, ["lr=3e-5", "name=2026", "columns=abstract"])
    assert (cfg.lr, cfg.name, cfg.columns) == (3e-5, "2026", ["abstract"])  # 3e-5: a YAML string
    assert load_config(DemoConfig, None, ["limit=null"]).limit is None


def test_dotted_keys_update_a_mapping_from_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {decoding: argmax, stride: 8}\n")
    cfg = load_config(DemoConfig, path, ["inner.stride=4", "inner.x.y=1"])
    assert cfg.inner == {"decoding": "argmax", "stride": 4, "x": {"y": 1}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("epoch=3", "unknown key(s) for DemoConfig: epoch"),
        ("epochs=three", "epochs: expected an integer"),
        ("bf16=maybe", "bf16: expected true or false"),
        ("lr=fast", "lr: expected a number"),
        ("noequals", "is not key=value"),
        ("inner=[a]", "inner: expected a mapping"),
        ("epochs=0", "epochs must be at least 1, got 0"),  # a bound, checked when built
        ("lr=0", "lr must be positive, got 0"),
        ("device=gpu", "device must be 'auto' or 'cpu', got 'gpu'"),  # a Literal
    ],
)
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(DemoConfig, None, [override])


def test_code_gets_the_same_messages_as_the_command_line():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) for DemoConfig: epoch; valid keys"):
        DemoConfig(epoch=3)
    with pytest.raises(ConfigError, match="epochs: expected an integer, got 'three'"):
        DemoConfig(epochs="three")
    with pytest.raises(ConfigError, match="epochs: expected an integer, got True"):
        DemoConfig(epochs=True)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(DemoConfig, tmp_path / "none.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(DemoConfig, path)


def test_help_lists_every_key_with_its_default_and_description(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_job_args(DemoConfig, ["--help"], "python -m jobs.demo", "A demo job.")
    assert exit.value.code == 0
    printed = capsys.readouterr().out
    assert "  lr (default 3e-05): learning rate\n" in printed
    assert "  columns (default ['title']): text columns\n" in printed


JOBS = {
    "annotate": "annotation.config:AnnotateConfig",
    "reprocess": "annotation.config:ReprocessConfig",
    "train": "training.config:TrainConfig",
    "build_dataset": "training.config:BuildDatasetConfig",
    "pubmed_to_parquet": "annotation.pubmed:PubmedToParquetConfig",
    "pmc_to_parquet": "annotation.pmc:PmcToParquetConfig",
    "pubtator_to_parquet": "corpora.pubtator:PubtatorToParquetConfig",
    "export": "corpora.export:ExportConfig",
    "evaluate": "annotation.gold_eval:EvaluateConfig",
    "quickstart": "jobs.quickstart:QuickstartConfig",
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_documents_every_key_in_its_help(job, capsys):
    module, name = JOBS[job].split(":")
    config_class = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(f"jobs.{job}").main(["--help"])
    assert exit.value.code == 0
    printed = capsys.readouterr().out
    usage = " ".join(printed.split("\n\n")[0].split())  # argparse wraps a long one
    assert usage == f"usage: python -m jobs.{job} [-h] [--config CONFIG] [key=value ...]"
    for key, field in config_class.model_fields.items():
        assert field.description, f"{name}.{key} has no description"
        assert f"  {key} (" in printed and field.description[:40] in printed


def test_a_missing_required_key_is_named(capsys):
    from jobs.export import main

    assert main(["format=bioc"]) == 2
    assert "missing key(s) for ExportConfig: annotations, out" in capsys.readouterr().err

from dataclasses import dataclass

import pytest

from plumbing.config import ConfigError, load_config, option


@dataclass
class DemoConfig:
    lr: float = option(3e-5, "learning rate")
    epochs: int = option(4, "passes over the data")
    name: str = option("run", "run name")
    bf16: bool = option(False, "mixed precision")
    columns: list[str] = option(["title"], "text columns")
    limit: int | None = option(None, "cap on rows")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# python -m jobs.demo --config c.yaml\nlr: 1e-4\nepochs: 2\n")
    cfg = load_config(DemoConfig, path, ["epochs=3", "columns=[title, abstract]", "limit=10"])
    assert cfg == DemoConfig(lr=1e-4, epochs=3, columns=["title", "abstract"], limit=10)


@pytest.mark.parametrize(
    "override, message",
    [
        ("epoch=3", "unknown key(s) for DemoConfig: epoch"),
        ("epochs=three", "epochs: expected an integer"),
        ("bf16=maybe", "bf16: expected true or false"),
        ("lr=fast", "lr: expected a number"),
        ("noequals", "is not key=value"),
    ],
)
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(DemoConfig, None, [override])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(DemoConfig, tmp_path / "none.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(DemoConfig, path)

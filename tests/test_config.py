import json
from pathlib import Path

import pytest
import yaml

from dlforge.config import ConfigError, dump_config, load_config, parse_config
from dlforge.config.schema import ExperimentConfig
from dlforge.experiment import load_experiment


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_misspelled_key_names_path_and_suggestion() -> None:
    assert problems({"train": {"epoch": 3}}) == ["train.epoch: unknown key — did you mean 'epochs'?"]


def test_wrong_type_and_out_of_range_values_name_their_path() -> None:
    found = problems({"train": {"epochs": "many", "optimizer": {"lr": -1}}})
    assert any(p.startswith("train.epochs:") and "integer" in p for p in found)
    assert any(p.startswith("train.optimizer.lr:") and "greater than 0" in p for p in found)


def test_model_needs_exactly_one_of_arch_or_layers() -> None:
    found = problems({"model": {"arch": "mlp", "layers": ["relu"]}})
    assert any("exactly one of model.arch" in p for p in found)


def test_overrides_set_nested_keys_parsed_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("name: x\ntrain: {epochs: 3}\n")
    cfg = load_config(path, ["train.epochs=5", "train.optimizer.lr=0.01", "model.arch=mlp"])
    assert (cfg.train.epochs, cfg.train.optimizer.lr, cfg.model.arch) == (5, 0.01, "mlp")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["train.epochs"])


def test_resolved_dump_round_trips_with_every_default(tmp_path: Path) -> None:
    cfg = load_config()
    text = dump_config(cfg)
    assert yaml.safe_load(text)["train"]["scheduler"]["name"] == "cosine"
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load_config(path) == cfg


def test_component_errors_carry_the_key_path() -> None:
    cfg = parse_config({"model": {"layers": [{"conv2d": {"channels": 0}}, {"dens": 10}]}})
    from dlforge.experiment import check_experiment

    with pytest.raises(ConfigError) as info:
        check_experiment(cfg)
    text = str(info.value)
    assert "model.layers[0].channels: Input should be greater than or equal to 1" in text
    assert "model.layers[1]: unknown layer 'dens' — did you mean 'dense'?" in text


def test_dataset_and_arch_params_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset: synthetic, params: {shapes: [3]}}\nmodel: {arch: resnet18, params: {widht: 8}}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "data.params.shapes: unknown key — did you mean 'shape'?" in info.value.problems
    assert "model.params.widht: unknown key — did you mean 'width'?" in info.value.problems


def test_yaml_errors_are_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_json_schema_covers_every_section() -> None:
    schema = ExperimentConfig.model_json_schema()
    assert {"data", "model", "train", "eval", "augment", "export"} <= set(schema["properties"])
    json.dumps(schema)


def test_examples_all_load() -> None:
    for path in sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.yaml")):
        load_experiment(path)

"""Loading an experiment as a user writes it: arch switches, every mistake at once, empty files (items 4-6 of #18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlforge.config import ConfigError, load_config
from dlforge.experiment import load_experiment
from dlforge.nn import build_model


def test_switching_arch_on_the_command_line_resets_params_to_that_archs_defaults() -> None:
    cfg = load_experiment(None, ["model.arch=resnet18_tiny"])  # the default file has cnn_small params
    assert cfg.model.arch == "resnet18_tiny" and cfg.model.params == {}
    assert sum(p.numel() for p in build_model(cfg.model, (1, 8, 8), 10).parameters()) > 0
    # params given on the command line hold, before or after the switch
    assert load_config(None, ["model.params.width=8", "model.arch=resnet18"]).model.params == {"width": 8}
    assert load_config(None, ["model.arch=resnet18", "model.params.width=8"]).model.params == {"width": 8}
    # the same arch keeps the file's params; a layer list replaces the arch
    assert load_config(None, ["model.arch=cnn_small"]).model.params["channels"] == [32, 64]
    layers = load_config(None, ["model.layers=[flatten, {dense: 10}]"]).model
    assert layers.arch is None and layers.params == {} and len(layers.layers or []) == 2


def test_every_config_mistake_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epoch: 2}\n"
                    "model:\n  layers: [flatten, {dens: 10}, {dense: {units: 0}}]\n"
                    "augment:\n  - hflip: {p: 1.5}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    found = info.value.problems
    assert found[0] == "train.epoch: unknown key — did you mean 'epochs'?"
    assert found[1].startswith("model.layers[1]: unknown layer 'dens' — did you mean 'dense'?")
    assert found[2].startswith("model.layers[2]")
    assert found[3] == "augment[0].p: Input should be less than or equal to 1 (got 1.5)"
    assert len(found) == 4  # each once


def test_data_section_errors_come_with_the_model_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: {val_fraction: 2}\nmodel: {arch: resnet9}\naugment: [{rotate: 10}]\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert [p.split(":")[0] for p in info.value.problems] == ["data.val_fraction", "model.arch"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_experiment_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="the file is empty"):
        load_experiment(path)

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


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_switching_arch_resets_params_for_text_and_generative_models() -> None:
    text = load_experiment(EXAMPLES / "text_langid.yaml", ["model.arch=text_transformer_tiny"])
    assert text.model.arch == "text_transformer_tiny" and text.model.params == {}
    denoise = load_experiment(EXAMPLES / "digits_denoise.yaml", ["model.arch=conv_autoencoder_tiny"])
    assert denoise.model.params == {}  # unet's depth would be an unknown key here
    gan = load_config(EXAMPLES / "digits_gan.yaml", ["model.arch=dcgan_generator_tiny",
                                                     "gan.discriminator.arch=dcgan_discriminator_tiny"])
    assert gan.model.params == {} and gan.gan is not None and gan.gan.discriminator.params == {}
    assert gan.gan.latent_dim == 32  # the rest of the section stays
    layers = load_config(EXAMPLES / "digits_gan.yaml", ["gan.discriminator.layers=[{conv2d: 8}, flatten]"])
    assert layers.gan is not None and layers.gan.discriminator.arch is None
    assert layers.gan.discriminator.params == {} and len(layers.gan.discriminator.layers or []) == 2


def test_task_section_errors_come_with_the_structural_ones(tmp_path: Path) -> None:
    path = tmp_path / "gan.yaml"
    path.write_text("task: gan\ntrain: {epoch: 2, precision: fp16}\nmodel: {arch: dcgan_generator_tiny}\n"
                    "gan: {discriminator: {arch: dcgan_discriminatr}}\nexport: {quantize: int8}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    found = [p.split(":")[0] for p in info.value.problems]
    # train is broken as a whole, so its precision is not judged against gan; everything else is
    assert found == ["train.epoch", "gan.discriminator.arch", "export.quantize"], info.value.problems
    path.write_text("task: denoise\nseed: x\ndenoise: {noise: [{gaussian: 0.3}, {speckle: 1}]}\n"
                    "model: {arch: cnn_small}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    found = [p.split(":")[0] for p in info.value.problems]
    assert found[0] == "seed" and "model.arch" in found and any(p.startswith("denoise.noise") for p in found)

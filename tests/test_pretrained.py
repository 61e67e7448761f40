"""Loading trained weights into a new model: names, head replacement, input-conv adaptation, reports,
and the sources weights come from (runs, packages, safetensors files, Hugging Face folders; never pickles)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

from dlforge.config import ModelConfig
from dlforge.config.finetune import PretrainedConfig
from dlforge.nn import Net, build_model
from dlforge.nn.pretrained import PretrainedError, adapt_input_conv, classifier_name, load_pretrained
from dlforge.weights import read_weights

TINY = ModelConfig(arch="cnn_tiny")


def net(classes: int = 10, channels: int = 1, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return build_model(TINY, (channels, 8, 8), classes)


def state(model: Net) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def cfg(**kw: object) -> PretrainedConfig:
    return PretrainedConfig.model_validate({"source": "test", **kw})


def test_other_class_count_replaces_the_head_and_loads_everything_else_bitwise() -> None:
    source, target = state(net(5, seed=1)), net(10, seed=2)
    fresh = state(target)
    report = load_pretrained(target, source, cfg(), 10)
    head = classifier_name(target, 10)
    assert report.head == [f"{head}.weight", f"{head}.bias"] and "number of classes" in report.head_reason
    assert not report.missing and not report.unexpected and not report.mismatched
    after = target.state_dict()
    for key in report.loaded:
        assert torch.equal(after[key], source[key]), key
    for key in report.head:
        assert torch.equal(after[key], fresh[key]), key  # the fresh initialisation, untouched
    assert all(k.startswith("normalize.") for k in report.kept) and report.kept
    assert any("head replaced" in line and head in line for line in report.lines())


def test_same_class_count_with_other_labels_still_replaces_the_head_unless_told_to_keep() -> None:
    source = state(net(5, seed=1))
    auto = load_pretrained(net(5, seed=2), source, cfg(), 5, list("01234"), list("56789"))
    assert auto.head and "labels differ" in auto.head_reason
    kept = load_pretrained(net(5, seed=2), source, cfg(head="keep"), 5, list("01234"), list("56789"))
    assert not kept.head and len(kept.loaded) == len(auto.loaded) + 2
    reset = load_pretrained(net(5, seed=2), source, cfg(head="reset"), 5, list("01234"), list("01234"))
    assert len(reset.head) == 2


def test_prefixes_are_aligned_and_rename_maps_apply() -> None:
    source = state(net(10, seed=1))
    ddp_style = {"module." + k.removeprefix("body."): v for k, v in source.items() if k.startswith("body.")}
    report = load_pretrained(net(10, seed=2), ddp_style, cfg(), 10)
    assert len(report.loaded) == len([k for k in source if k.startswith("body.")])
    assert report.aligned == "replaced prefix 'module.' by 'body.'"
    renamed = {k.replace("body.", "backbone.layers."): v for k, v in source.items()}
    report = load_pretrained(net(10, seed=2), renamed, cfg(rename={r"^backbone\.layers\.": "body."}), 10)
    assert not report.unexpected and report.aligned == ""


def test_strict_refuses_unexpected_and_mismatched_keys_that_lenient_reports() -> None:
    source = state(net(10, seed=1))
    source["extra.weight"] = torch.zeros(3)
    conv = next(k for k, v in source.items() if v.dim() == 4 and k != "body.0.weight")
    source[conv] = torch.zeros(7, 7, 3, 3)
    report = load_pretrained(net(10, seed=2), dict(source), cfg(), 10)
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == [(conv, [7, 7, 3, 3], list(net(10).state_dict()[conv].shape))]
    with pytest.raises(PretrainedError, match=r"1 unexpected \(extra.weight\), 1 shape-mismatched"):
        load_pretrained(net(10, seed=2), source, cfg(strict=True), 10)


def test_a_source_matching_nothing_says_how_many_matched() -> None:
    foreign = {"encoder.layer.0.attention.query.weight": torch.zeros(4, 4), "pooler.dense.bias": torch.zeros(4)}
    with pytest.raises(PretrainedError, match=r"0 of its 2 tensors match this model"):
        load_pretrained(net(), foreign, cfg(), 10)


@pytest.mark.parametrize(("source_channels", "target_channels"), [(1, 3), (3, 1)])
def test_first_conv_adapts_between_grey_and_colour(source_channels: int, target_channels: int) -> None:
    source_net, target = net(10, source_channels, seed=1), net(10, target_channels, seed=2)
    report = load_pretrained(target, state(source_net), cfg(), 10)
    assert [k for k, *_ in report.adapted] == ["body.0.weight"] and not report.mismatched
    grey = torch.rand(2, 1, 8, 8)
    conv_s, conv_t = source_net.body[0], target.body[0]
    # a grey image seen in colour (3 equal channels) gets the grey response, and vice versa for summed kernels
    as_source = conv_s(grey.expand(-1, source_channels, -1, -1))
    as_target = conv_t(grey.expand(-1, target_channels, -1, -1))
    assert torch.allclose(as_source, as_target, atol=1e-5)


def test_adapt_input_conv_repeats_and_rescales_for_more_channels() -> None:
    w = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    out = adapt_input_conv(w, 4)
    assert out.shape == (2, 4, 1, 1)
    assert torch.allclose(out[:, :3], w * 3 / 4) and torch.allclose(out[:, 3], w[:, 0] * 3 / 4)


# --- sources --------------------------------------------------------------------------------------------
def test_safetensors_file_hf_folder_and_sharded_index(tmp_path: Path) -> None:
    source = state(net(10, seed=1))
    save_file(source, str(tmp_path / "weights.safetensors"))
    assert read_weights(str(tmp_path / "weights.safetensors")).state.keys() == source.keys()
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(source, str(hf / "model.safetensors"))
    assert "folder" in read_weights(str(hf)).description
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(source)
    halves = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: source[k] for k in part}, str(sharded / name))
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = read_weights(str(sharded)).state
    assert all(torch.equal(loaded[k], source[k]) for k in source)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "nope.safetensors", "no such file or folder"),
    (lambda d: (torch.save({"w": torch.zeros(1)}, d / "model.pt"), d / "model.pt")[1], "pickle checkpoint"),
    (lambda d: ((d / "hf").mkdir(), torch.save({}, d / "hf" / "pytorch_model.bin"), d / "hf")[2],
     "pickle checkpoint"),
    (lambda d: ((d / "bad.safetensors").write_bytes(b"not a tensor file"), d / "bad.safetensors")[1],
     "not a readable safetensors file"),
    (lambda d: ((d / "empty").mkdir(), d / "empty")[1], "no model.safetensors here"),
])
def test_bad_sources_are_one_clear_error(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(PretrainedError, match=message) as info:
        read_weights(str(path))
    assert "\n" not in str(info.value) and str(info.value).startswith("model.pretrained")

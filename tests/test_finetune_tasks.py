"""Fine-tuning beyond image classifiers: every task's model loads `model.pretrained` by name, and freezing /
parameter groups / layer decay reach the optimizer through `Trainer.make_optimizer` (text models, denoisers);
the GAN task refuses the controls it does not wire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlforge.config import ConfigError, parse_config
from dlforge.experiment import check_experiment
from dlforge.taskapi import get_task
from dlforge.train.dist import DistContext
from dlforge.train.loop import build_trainer
from dlforge.train.param_groups import ParamGroupError
from dlforge.train.run import train_run
from tests.conftest import tiny_config

CPU = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
LANGID = {"dataset": "langid", "params": {"languages": ["de", "en", "fr"], "per_language": 40,
                                          "vocabulary": 100, "tokenizer": {"kind": "char", "max_length": 24}}}


def _trainer(raw: dict[str, object]):  # type: ignore[no-untyped-def]
    cfg = check_experiment(parse_config(raw))
    task = get_task(cfg.task)
    bundle = task.load_data(cfg)
    return build_trainer(cfg, bundle, task.create_model(cfg, bundle), CPU)


def test_text_model_gets_freeze_param_groups_and_layer_decay_through_make_optimizer() -> None:
    tr = _trainer({"data": LANGID, "model": {"arch": "text_rnn_tiny"},
                   "train": {"optimizer": {"lr": 0.01, "weight_decay": 0.1}, "layer_decay": 0.5,
                             "freeze": [r"^body\.0\."], "unfreeze_at_epoch": 2,
                             "param_groups": [{"params": r"^body\.0\.", "lr_scale": 0.1, "weight_decay": 0.0}]}})
    names = {id(p): n for n, p in tr.net.named_parameters()}
    groups = tr.optimizer.param_groups
    first = [g for g in groups if any(names[id(p)].startswith("body.0.") for p in g["params"])]
    assert len(first) == 1 and first[0]["weight_decay"] == 0.0
    top = max(groups, key=lambda g: g["lr"])  # the classifier: the last block, undecayed
    assert top["weight_decay"] == 0.1 and len(groups) > 2  # one group per top-level block
    # the scheduler scales every group alike, so the ratios are the configured ones
    assert first[0]["lr"] / top["lr"] == pytest.approx(0.1 * 0.5 ** (len(groups) - 1), rel=1e-9)
    frozen = [n for n, p in tr.net.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("body.0.") for n in frozen)  # the embedding, frozen for epoch 1
    assert sum(len(g["params"]) for g in groups) == len(list(tr.net.parameters()))


@pytest.mark.slow
def test_denoiser_starts_from_a_denoise_run_and_keeps_frozen_layers(tmp_path: Path) -> None:
    unet = {"task": "denoise", "model": {"arch": "unet", "params": {"width": 8, "depth": 1}},
            "denoise": {"noise": [{"gaussian": 0.3}]}}
    train_run(check_experiment(tiny_config(**unet, train={"epochs": 1})), tmp_path / "pre")
    tuned = check_experiment(tiny_config(**{**unet, "model": {**unet["model"], "pretrained": str(tmp_path / "pre")}},
                                         train={"epochs": 1, "freeze": [r"^body\.0\."]}))
    train_run(tuned, tmp_path / "tuned")
    report = json.loads((tmp_path / "tuned/pretrained.json").read_text())
    assert report["loaded"] and not (report["missing"] or report["mismatched"] or report["head"])
    source, after = load_file(tmp_path / "pre/model.safetensors"), load_file(tmp_path / "tuned/model.safetensors")
    frozen = [k for k in after if k.startswith("body.0.")]
    assert frozen and all(torch.equal(after[k], source[k]) for k in frozen)
    assert any(not torch.equal(after[k], source[k]) for k in after if not k.startswith("body.0."))


def test_backbone_freeze_needs_a_classifier_and_gan_refuses_the_controls() -> None:
    with pytest.raises(ParamGroupError, match="this task's model has none"):
        _trainer({"task": "denoise", "data": {"dataset": "digits"}, "denoise": {"noise": [{"gaussian": 0.3}]},
                  "model": {"arch": "unet", "params": {"width": 8, "depth": 1}}, "train": {"freeze": "backbone"}})
    with pytest.raises(ConfigError) as err:
        check_experiment(parse_config({"task": "gan", "model": {"arch": "dcgan_generator"},
                                       "train": {"freeze": "backbone", "layer_decay": 0.7}}))
    assert "train.freeze: not supported for task gan" in str(err.value)
    assert "train.layer_decay: not supported for task gan" in str(err.value)
    with pytest.raises(ConfigError, match="timm architectures are classifiers"):
        check_experiment(parse_config({"task": "denoise", "model": {"arch": "timm/resnet18"}}))

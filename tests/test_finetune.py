"""Fine-tuning end to end through `train_run`: pretrained runs and packages, frozen layers that stay
bitwise unchanged (BatchNorm statistics included), unfreezing, exact resume, parameter groups, params CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import parse_config
from dlforge.data.splits import load_data
from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.optim import build_optimizer, build_scheduler
from dlforge.train.param_groups import ParamGroupError, optimizer_groups, plan_groups
from dlforge.train.run import make_model, train_run
from tests.conftest import tiny_config

FIRST = ["0", "1", "2", "3", "4"]
HEAD = ("body.12.weight", "body.12.bias")  # cnn_tiny's classifier (dense: classes)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CNN trained 1 epoch on digits 0–4, exported too (for the package source)."""
    from dlforge.export.package import export_run

    run = tmp_path_factory.mktemp("pre") / "run"
    train_run(tiny_config(data={"classes": FIRST}, train={"epochs": 1}), run)
    export_run(run)
    return run


def finetune(pretrained: Path, **train: object) -> object:
    return tiny_config(model={"arch": "cnn_tiny", "pretrained": str(pretrained)},
                       train={"keep_best": False, "batch_size": 32, **train})


@pytest.mark.slow
def test_package_with_other_classes_replaces_the_head_and_says_so(pretrained_run: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    train_run(finetune(pretrained_run / "package", epochs=1), tmp_path)  # type: ignore[arg-type]
    report = json.loads((tmp_path / "pretrained.json").read_text())
    assert report["head"] == list(HEAD) and "number of classes differs" in report["head_reason"]
    assert "model package" in report["source"] and not report["missing"] and not report["mismatched"]
    assert "head replaced (re-initialised): body.12.weight, body.12.bias" in capsys.readouterr().err


@pytest.mark.slow
def test_frozen_backbone_and_its_batchnorm_stats_stay_bitwise_unchanged(pretrained_run: Path,
                                                                        tmp_path: Path) -> None:
    train_run(finetune(pretrained_run, epochs=2, freeze="backbone"), tmp_path)  # type: ignore[arg-type]
    source, tuned = load_file(pretrained_run / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    body = [k for k in tuned if k.startswith("body.") and k not in HEAD]
    assert any("running_mean" in k for k in body) and any("num_batches_tracked" in k for k in body)
    for key in body:
        assert torch.equal(tuned[key], source[key]), key
    assert tuned[HEAD[0]].shape[0] == 10 and source[HEAD[0]].shape[0] == 5  # the new head trained in their place


def _resume_config(pretrained: Path) -> object:
    return finetune(pretrained, epochs=3, freeze=[r"^body\.[0-4]\."], unfreeze_at_epoch=3, progress=False)


@pytest.mark.slow
def test_exact_resume_across_the_unfreeze_epoch(pretrained_run: Path, tmp_path: Path) -> None:
    cfg = _resume_config(pretrained_run)
    train_run(cfg, tmp_path / "straight")  # type: ignore[arg-type]
    # frozen for epochs 1-2: the epoch-2 checkpoint still has the pretrained convolution; epoch 3 trained it
    epoch2, _, _ = load_checkpoint(list_checkpoints(tmp_path / "straight/checkpoints")[0])
    final = load_file(tmp_path / "straight/model.safetensors")
    source = load_file(pretrained_run / "model.safetensors")
    assert torch.equal(epoch2["body.0.weight"], source["body.0.weight"])
    assert torch.equal(epoch2["body.1.running_mean"], source["body.1.running_mean"])
    assert not torch.equal(final["body.0.weight"], source["body.0.weight"])
    # a run stopped right after epoch 2 (its last checkpoint) and resumed ends bitwise the same
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed/checkpoints")[-1])
    (tmp_path / "resumed/model.safetensors").unlink()
    train_run(cfg, tmp_path / "resumed", resume=True)  # type: ignore[arg-type]
    resumed, straight = (tmp_path / d / "model.safetensors" for d in ("resumed", "straight"))
    assert resumed.read_bytes() == straight.read_bytes()


def test_param_groups_layer_decay_and_schedulers_cover_every_group() -> None:
    cfg = tiny_config(train={"optimizer": {"lr": 0.01, "weight_decay": 0.05}, "layer_decay": 0.5,
                             "param_groups": [{"params": r"^body\.0\.", "lr": 0.002, "weight_decay": 0.0}]})
    net = make_model(cfg, load_data(cfg.data, cfg.seed))
    plan = plan_groups(net, cfg.train)
    # blocks with parameters: conv0, bn1, conv3, bn4, dense9, dense12 → layers 0..5; conv0 is in the explicit group
    expected = [0.002 * 0.5**5] + [0.01 * 0.5**k for k in (4, 3, 2, 1, 0)]
    assert [g.lr for g in plan] == pytest.approx(expected, rel=1e-12)
    assert [g.weight_decay for g in plan] == [0.0, 0.05, 0.05, 0.05, 0.05, 0.05]
    assert sum(len(g.params) for g in plan) == len(list(net.parameters()))
    for name in ("step", "cosine", "onecycle"):
        opt = build_optimizer(optimizer_groups(plan), cfg.train.optimizer)
        sched = build_scheduler(opt, cfg.train.scheduler.model_copy(update={"name": name, "step_size": 1}),
                                0.01, steps_per_epoch=2, epochs=4)
        for _ in range(3):
            opt.step()
            sched.step()
        ratios = [g["lr"] / p.lr for g, p in zip(opt.param_groups, plan, strict=True)]
        assert max(ratios) - min(ratios) < 1e-9 and ratios[0] != 1.0, name  # one schedule, every group


def test_a_regex_that_names_nothing_is_refused() -> None:
    cfg = tiny_config(train={"param_groups": [{"params": "^encoder", "lr": 0.1}]})
    net = make_model(cfg, load_data(cfg.data, cfg.seed))
    with pytest.raises(ParamGroupError, match=r"param_groups\[0\].params: '\^encoder' matches no parameter"):
        plan_groups(net, cfg.train)


def test_params_command_shows_groups_and_trainable_counts(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("model: {arch: cnn_tiny}\ntrain: {freeze: backbone, unfreeze_at_epoch: 3, layer_decay: 0.8}\n")
    result = CliRunner().invoke(app, ["params", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    head = 16 * 10 + 10  # dense 16 → 10 classes
    assert f"{head:,} of " in result.output and "all from epoch 3" in result.output
    assert "L5/5" in result.output


def test_bad_pretrained_source_is_one_error_line(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pth")
    for source, message in ((tmp_path / "missing", "no such file or folder"), (tmp_path / "model.pth", "pickle")):
        result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--set", "model.arch=cnn_tiny",
                                          "--set", f"model.pretrained={source}", "--set", "train.progress=false"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines[0].startswith("error: model.pretrained.source") and message in result.output
        assert "Traceback" not in result.output


def test_timm_archs_are_checked_at_load_time() -> None:
    """Without timm (this project never installs torchvision): one clear line; with it: names are checked."""
    from dlforge.config import ConfigError
    from dlforge.experiment import check_experiment

    try:
        import timm  # noqa: F401
    except Exception:  # missing, or a torchvision that does not fit this torch
        with pytest.raises(ConfigError, match=r"model.arch: timm/resnet18 needs the timm package"):
            check_experiment(parse_config({"model": {"arch": "timm/resnet18"}}))
        return
    check_experiment(parse_config({"model": {"arch": "timm/resnet18"}}))
    with pytest.raises(ConfigError, match=r"timm has no architecture 'resnet181'"):
        check_experiment(parse_config({"model": {"arch": "timm/resnet181"}}))


def test_the_docs_example_loads() -> None:
    import re

    import yaml

    from dlforge.experiment import check_experiment

    doc = (Path(__file__).parent.parent / "docs" / "finetuning.md").read_text()
    cfg = check_experiment(parse_config(yaml.safe_load(re.findall(r"```yaml\n(.*?)```", doc, re.S)[0])))
    assert cfg.train.freeze == "backbone" and cfg.model.pretrained is not None

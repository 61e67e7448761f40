"""GAN: noise [+ class] → image. Alternating discriminator/generator steps, two optimizers, an EMA generator.

`model:` is the generator (what gets exported and served); `gan:` holds the discriminator, the
loss (hinge or non-saturating BCE), the EMA decay and the classifier that judges the samples.
Exact resume covers both optimizers, both schedules, the EMA and the RNG (they are all in the
checkpoint: the EMA is part of the model, the discriminator's optimizer in `trainer.extra`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dlforge.config import ConfigError, ExperimentConfig
from dlforge.data.datasets import DATASETS
from dlforge.data.samples import take
from dlforge.data.splits import DataBundle, load_data, peek_input_shape
from dlforge.nn import MODELS
from dlforge.nn.checks import check_model
from dlforge.nn.generative_archs import ARCH_TASKS
from dlforge.taskapi import StepContext, Task
from dlforge.tasks.gan.metrics import eval_latents, generate, sample_quality
from dlforge.tasks.gan.model import as_gan, build_gan, gan_settings, judge
from dlforge.tasks.gan.nets import ema_decay_at, ema_update

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

class GanTask(Task):
    name = "gan"
    losses = ("d_loss", "g_loss")
    metrics = ("fid", "diversity", "class_accuracy")
    summary = ("fid", "class_accuracy", "diversity", "loss")
    default_monitor = "val_fid"
    unused_parameters = True  # each pass updates one side: DDP must not wait for the other's gradients

    def minimize(self, monitor: str) -> bool:
        return monitor in ("val_loss", "val_fid")

    def architectures(self) -> list[str]:
        return sorted(name for name, task in ARCH_TASKS.items() if task == self.name)

    # --- load time ------------------------------------------------------------------------------

    def check(self, cfg: ExperimentConfig) -> list[str]:
        g = gan_settings(cfg)
        problems = [*check_model(cfg.model), *check_model(g.discriminator, "gan.discriminator")]
        t = cfg.train
        if t.precision == "fp16":
            problems.append("train.precision: fp16 needs one loss scaler per optimizer; use bf16 or fp32 for task gan")
        if t.accumulate != 1:
            problems.append("train.accumulate: task gan alternates D/G steps per batch; set train.accumulate: 1")
        if t.strategy == "fsdp":
            problems.append("train.strategy: task gan runs with ddp (its models are small); set train.strategy: ddp")
        if t.monitor is not None and t.monitor not in ("val_loss", *(f"val_{m}" for m in self.metrics)):
            problems.append(f"train.monitor: '{t.monitor}' is not a gan metric (use val_fid, val_diversity, "
                            "val_class_accuracy or val_loss)")
        if t.monitor == "val_class_accuracy" and not (g.classifier and g.conditional):
            problems.append("train.monitor: val_class_accuracy needs gan.classifier and gan.conditional: true")
        if cfg.denoise is not None:
            problems.append("denoise: belongs to task: denoise; remove it or set task: denoise")
        problems += finetune_problems(cfg)
        if cfg.export.quantize != "none":
            problems.append("export.quantize: int8 is for classifiers; a GAN generator is exported in fp32")
        if cfg.model.arch is not None and cfg.model.arch in ARCH_TASKS and ARCH_TASKS[cfg.model.arch] != "gan":
            problems.append(f"model.arch: '{cfg.model.arch}' is a {ARCH_TASKS[cfg.model.arch]} model; the generator "
                            "of task gan is e.g. dcgan_generator")
        elif cfg.model.arch is not None and cfg.model.arch not in ARCH_TASKS and cfg.model.arch in MODELS:
            problems.append(f"model.arch: '{cfg.model.arch}' is a classifier; `model:` of task gan is the generator "
                            "(e.g. model.arch: dcgan_generator)")
        return problems + image_data_problems(cfg)

    # --- data and model -------------------------------------------------------------------------

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        return load_data(cfg.data, cfg.seed, reuse)

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker
        net = build_gan(cfg, bundle.input_shape, bundle.labels)
        judge(net)  # training evaluates every epoch: a missing or mismatched classifier fails now, not after epoch 1
        return net

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        return build_gan(cfg, tuple(info.input_shape), info.labels)

    # --- training ---------------------------------------------------------------------------------

    def setup(self, tr: StepContext) -> None:
        """The shared optimizer and schedule drive the generator; the discriminator gets its own pair."""
        g, net = gan_settings(tr.cfg), as_gan(tr.net)
        tr.optimizer, tr.scheduler = tr.make_optimizer(net.generator.parameters())
        tr.extra["d_optimizer"], tr.extra["d_scheduler"] = tr.make_optimizer(net.discriminator.parameters(),
                                                                             g.d_optimizer)

    def train_step(self, tr: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        real, y = batch
        if tr.augmenter is not None:
            real, _ = tr.augmenter(real, y)
        g, net = gan_settings(tr.cfg), as_gan(tr.net)
        labels = y if g.conditional else None
        d_optimizer, d_scheduler = tr.extra["d_optimizer"], tr.extra["d_scheduler"]
        for _ in range(g.d_steps):
            z = torch.randn(len(real), g.latent_dim, device=real.device)
            with tr.autocast():
                d_loss = tr.model("d", z, labels, real, g.loss)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            _clip(net.discriminator, tr.cfg.train.grad_clip)
            d_optimizer.step()
        d_scheduler.step()
        z = torch.randn(len(real), g.latent_dim, device=real.device)
        with tr.autocast():
            g_loss = tr.model("g", z, labels, None, g.loss)
        tr.optimizer.zero_grad(set_to_none=True)
        g_loss.backward()  # also fills the discriminator's grads: zeroed before its next step
        _clip(net.generator, tr.cfg.train.grad_clip)
        tr.optimizer.step()
        tr.scheduler.step()
        if net.ema is not None:
            ema_update(net.ema, net.generator, ema_decay_at(int(net.ema_steps), g.ema_decay))
            net.ema_steps += 1
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    # --- evaluation -------------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        """Sample quality on the whole split (identical on every worker: fixed latents, all samples)."""
        net = as_gan(model)
        judge_ = judge(net).to(device)
        real, real_y = (t.to(device) for t in take(batches.dataset))
        conditional = net.generator.num_classes > 0
        n = max(net.eval_samples, len(real))
        z, y = eval_latents(n, net.generator.latent_dim, len(info.labels), device)
        fake = generate(net.sampler, z, y if conditional else None)
        quality = sample_quality(judge_, fake, y, real, real_y, conditional)
        with torch.no_grad():
            d = net.discriminator.eval()
            loss = float(torch.relu(1 - d(real, real_y if conditional else None)).mean()
                         + torch.relu(1 + d(fake[:len(real)], y[:len(real)] if conditional else None)).mean())
            d.train()
        return {"loss": loss, **quality, "samples": n, "judge": judge_.source}

    def on_epoch_end(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        """report/samples/epoch_<n>.png on the fixed grid latents, every `gan.grid_every` epochs."""
        every = as_gan(model).grid_every
        if every and epoch % every == 0:
            from dlforge.tasks.gan.report import write_epoch_grid

            write_epoch_grid(model, run_dir, epoch)

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        from dlforge.tasks.gan.report import untrained_baseline, write_gan_report

        baseline = untrained_baseline(run_dir)  # what "good" is measured against: the same generator at init
        metrics = {**metrics, "untrained": baseline, "fid_ratio_to_untrained": metrics["fid"] / baseline["fid"]}
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if plots:
            write_gan_report(run_dir)

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        from dlforge.tasks.gan.export import export_generator

        return export_generator(as_gan(net), info, cfg, root, tolerance, quantize)


def finetune_problems(cfg: ExperimentConfig) -> list[str]:
    """Freezing and per-group learning rates are not wired through the GAN's two optimizers (the
    generator's and the discriminator's parameter names would both be in play): refused, not ignored."""
    t, problems = cfg.train, []
    for key, value in (("freeze", t.freeze), ("param_groups", t.param_groups), ("layer_decay", t.layer_decay)):
        if value:
            problems.append(f"train.{key}: not supported for task gan (generator and discriminator have optimizers "
                            "of their own); remove it — model.pretrained alone does work")
    return problems


def image_data_problems(cfg: ExperimentConfig) -> list[str]:
    """The dataset must hold images and declare this task (`DatasetEntry.tasks`)."""
    if cfg.data.dataset not in DATASETS:
        return []  # the dataset check names it
    entry = DATASETS.get(cfg.data.dataset)
    if cfg.task not in entry.tasks:
        return [f"data.dataset: '{cfg.data.dataset}' is a dataset for {', '.join(entry.tasks)}, not {cfg.task} "
                "— use an image dataset (digits, image_folder)"]
    try:
        shape = peek_input_shape(cfg.data)
    except (ValueError, ConfigError):
        return []  # the dataset's own check reports it
    if len(shape) != 3:
        return [f"data.dataset: task {cfg.task} needs images (channels, height, width); "
                f"'{cfg.data.dataset}' gives samples of shape {tuple(shape)}"]
    return []


def _clip(module: nn.Module, max_norm: float | None) -> None:
    if max_norm:
        nn.utils.clip_grad_norm_(module.parameters(), max_norm)


TASK = GanTask()
__all__ = ["TASK", "GanTask"]

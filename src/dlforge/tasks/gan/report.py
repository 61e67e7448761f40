"""The GAN report: sample grids (fixed latents, one row per class) and the D/G loss and FID curves."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dlforge.evaluate.plots import Panel, plot_learning_curves
from dlforge.imagegrid import save_grid
from dlforge.tasks.gan.model import GRID_PER_CLASS, build_gan, epoch_grid, judge

GRIDS = "samples"


def write_epoch_grid(model: nn.Module, run_dir: Path, epoch: int) -> Path:
    """report/samples/epoch_<n>.png from the fixed grid latents: progress you can look at."""
    folder = run_dir / "report" / GRIDS
    folder.mkdir(parents=True, exist_ok=True)
    return save_grid(epoch_grid(model).numpy(), folder / f"epoch_{epoch:04d}.png", columns=GRID_PER_CLASS)


def untrained_baseline(run_dir: Path) -> dict[str, float | None]:
    """FID, diversity and class accuracy of the same generator freshly initialised, on the test split."""
    import torch

    from dlforge.config import load_config
    from dlforge.data.samples import take
    from dlforge.data.splits import load_data
    from dlforge.runinfo import RunInfo
    from dlforge.tasks.gan.metrics import eval_latents, generate, sample_quality

    cfg, info = load_config(run_dir / "config.yaml"), RunInfo.load(run_dir)
    real, real_y = take(load_data(cfg.data, cfg.seed).test)
    torch.manual_seed(cfg.seed)  # the initial weights of this very run
    net = build_gan(cfg, tuple(info.input_shape), info.labels)
    conditional = net.generator.num_classes > 0
    z, y = eval_latents(max(net.eval_samples, len(real)), net.generator.latent_dim, len(info.labels),
                        torch.device("cpu"))
    fake = generate(net.generator, z, y if conditional else None)
    return sample_quality(judge(net), fake, y, real, real_y, conditional)


def write_gan_report(run_dir: Path) -> None:
    """report/samples.png (the final EMA generator) and report/learning_curves.png."""
    from dlforge.rundir import load_run, read_history
    report = run_dir / "report"
    report.mkdir(exist_ok=True)
    _, _, net = load_run(run_dir)
    save_grid(epoch_grid(net).numpy(), report / "samples.png", columns=GRID_PER_CLASS)
    if history := read_history(run_dir):
        plot_learning_curves(history, report / "learning_curves.png", GAN_PANELS)


GAN_PANELS = (
    Panel("discriminator / generator loss", (("train_d_loss", "d_loss"), ("train_g_loss", "g_loss"))),
    Panel("FID on the validation split (lower is better)", (("val_fid", "FID (val)"),), log=True),
)

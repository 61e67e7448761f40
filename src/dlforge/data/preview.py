"""`dlforge augment-preview`: a PNG grid of training images and several augmented draws of them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from dlforge.config import ExperimentConfig
from dlforge.data.augment import build_augmenter
from dlforge.data.samples import take
from dlforge.data.splits import load_data


def augmented_rows(cfg: ExperimentConfig, images: int, draws: int) -> tuple[Tensor, list[Tensor]]:
    """The first `images` training samples and `draws` seeded augmentations of them."""
    bundle = load_data(cfg.data, cfg.seed)
    x, y = take(bundle.train, images)
    augmenter = build_augmenter(cfg.augment, bundle.input_shape, bundle.num_classes, bundle.integer_input)
    rows = []
    for draw in range(draws):
        torch.manual_seed(cfg.seed + draw)
        rows.append(augmenter(x.clone(), y)[0] if augmenter is not None else x)
    return x, rows


def _show(ax: plt.Axes, image: Tensor) -> None:
    picture = image.clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def write_preview(cfg: ExperimentConfig, out: Path, images: int = 8, draws: int = 4) -> Path:
    """Row 0: originals; rows 1..draws: augmented. Only image datasets have something to show."""
    originals, rows = augmented_rows(cfg, images, draws)
    if originals.dim() != 4:
        raise ValueError("augment-preview needs image data (channels, height, width)")
    fig, axes = plt.subplots(draws + 1, images, figsize=(1.3 * images, 1.3 * (draws + 1)), squeeze=False)
    for row, batch in enumerate([originals, *rows]):
        for col in range(images):
            _show(axes[row][col], batch[col])
        axes[row][0].set_ylabel("original" if row == 0 else f"draw {row}", fontsize=8)
    fig.suptitle(", ".join(spec.type for spec in cfg.augment) or "no augmentation", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

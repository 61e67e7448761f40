"""Augmentation inside real training: accuracy holds and previews render."""

from pathlib import Path

import pytest

from dlforge.data.preview import write_preview
from dlforge.experiment import load_experiment
from dlforge.train.run import train_run

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_augment.yaml"


@pytest.mark.slow
def test_digits_with_default_augmentation_reaches_97_percent(tmp_path: Path) -> None:
    cfg = load_experiment(EXAMPLE, ["train.progress=false", "eval.plots=false"])
    metrics = train_run(cfg, tmp_path)
    assert metrics["accuracy"] >= 0.97 and metrics["f1"] >= 0.97


def test_augment_preview_writes_a_png_grid(tmp_path: Path) -> None:
    cfg = load_experiment(EXAMPLE)
    out = write_preview(cfg, tmp_path / "grid.png", images=4, draws=2)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_augment_params_fail_at_load_with_the_path(tmp_path: Path) -> None:
    from dlforge.config import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text("augment:\n  - hflip: {p: 1.5}\n  - random_crop: {size: [40, 40]}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert "augment[0].p" in text and "augment[1].size" in text

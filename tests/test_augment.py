"""Batch augmentation: what each op does to known images, targets of label mixing, validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from dlforge.config import ComponentSpec, ConfigError
from dlforge.config.components import resolve
from dlforge.data.augment import (
    AUGMENTATIONS,
    BatchAugmenter,
    build_augmenter,
    validate_augment,
)

RGB = (3, 16, 16)
GRAY = (1, 8, 8)


def specs(*items: Any) -> list[ComponentSpec]:
    """YAML-like entries (`"hflip"`, `{"rotate": 15}`, …) as the experiment file gives them."""
    return [ComponentSpec.model_validate(item) for item in items]


def augmenter(*items: Any, shape: tuple[int, ...] = RGB, num_classes: int = 10) -> BatchAugmenter:
    aug = build_augmenter(specs(*items), shape, num_classes)
    assert aug is not None
    return aug


def labels(n: int, num_classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % num_classes


def problems_of(items: list[Any], shape: tuple[int, ...] = RGB) -> str:
    with pytest.raises(ConfigError) as info:
        validate_augment(specs(*items), shape)
    return str(info.value)


# --- what the ops do -------------------------------------------------------------------------


def test_no_specs_means_no_augmenter() -> None:
    assert build_augmenter([], RGB, 10) is None


@pytest.mark.parametrize(("name", "dims"), [("hflip", [-1]), ("vflip", [-2])])
def test_flip_with_p1_mirrors_the_image(name: str, dims: list[int]) -> None:
    x = torch.rand(4, *RGB)
    y = labels(4)
    out, targets = augmenter({name: 1.0})(x, y)
    torch.testing.assert_close(out, torch.flip(x, dims))
    assert targets is y  # no label-mixing op: targets pass through untouched


def test_rotate_90_moves_the_top_right_pixel_to_the_top_left() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 4] = 1.0
    out, _ = augmenter({"rotate": {"degrees": [90, 90], "p": 1.0}}, shape=(1, 5, 5))(x, labels(1))
    assert out[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)
    assert out.sum() == pytest.approx(1.0, abs=1e-4)


def test_rotate_90_equals_rot90_anticlockwise() -> None:
    x = torch.rand(3, *RGB)
    out, _ = augmenter({"rotate": {"degrees": [90, 90], "p": 1.0}})(x, labels(3))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-4, rtol=0)


def test_short_forms_set_the_primary_setting() -> None:
    rotate, hflip = (
        resolve(AUGMENTATIONS, s, "augment")[1] for s in specs({"rotate": 15}, {"hflip": 0.25})
    )
    assert rotate.degrees == (-15.0, 15.0)
    assert hflip.p == 0.25


@pytest.mark.parametrize(
    "item",
    [
        {"random_crop": {"padding": 4}},
        {"random_crop": {"size": 12, "padding": 2, "p": 0.5}},
        {"random_crop": [10, 12]},
        {"random_crop": {"size": [20, 18], "padding": 2}},
        {"random_resized_crop": {"scale": [0.2, 0.5]}},
    ],
)
def test_crops_keep_the_input_shape(item: Any) -> None:
    x = torch.rand(5, *RGB)
    out, _ = augmenter(item)(x, labels(5))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_padded_random_crop_is_a_window_of_the_padded_image() -> None:
    x = torch.rand(6, *RGB)
    out, _ = augmenter({"random_crop": {"padding": 2}})(x, labels(6))
    padded = F.pad(x, (2, 2, 2, 2))
    windows = padded.unfold(2, 16, 1).unfold(3, 16, 1)  # (N, C, 5, 5, 16, 16)
    for i in range(6):
        diff = (windows[i] - out[i][:, None, None]).abs().amax(dim=(0, 3, 4))
        assert diff.min() < 1e-6, f"sample {i} is not a 16x16 window of the padded image"


def test_crop_probability_is_drawn_per_sample() -> None:
    x = torch.rand(64, *RGB)
    torch.manual_seed(0)
    out, _ = augmenter({"random_resized_crop": {"scale": [0.1, 0.3], "p": 0.5}})(x, labels(64))
    untouched = (out == x).flatten(1).all(dim=1).sum().item()
    assert 10 < untouched < 54


def test_gaussian_noise_has_the_requested_std() -> None:
    x = torch.full((8, *RGB), 0.5)
    torch.manual_seed(0)
    out, _ = augmenter({"gaussian_noise": {"std": 0.05, "p": 1.0}})(x, labels(8))
    noise = out - x
    assert noise.std().item() == pytest.approx(0.05, rel=0.05)
    assert abs(noise.mean().item()) < 0.005


def test_gaussian_noise_is_clipped_to_the_image_range() -> None:
    out, _ = augmenter({"gaussian_noise": 0.5})(torch.rand(4, *RGB), labels(4))
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("mixer", ["mixup", "cutmix"])
def test_label_mixing_gives_soft_targets_that_match_the_pixels(mixer: str) -> None:
    n, k = 16, 16
    values = torch.linspace(0.0, 1.0, n)
    x = values.view(n, 1, 1, 1).expand(n, *RGB).clone()  # sample i is flat, of value values[i]
    torch.manual_seed(0)
    out, targets = augmenter({mixer: 1.0}, num_classes=k)(x, torch.arange(n))
    assert targets.shape == (n, k) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(n))
    assert (targets >= 0).all()
    # the target weight of each class is its share of each image's pixels
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), targets @ values, atol=1e-5, rtol=0)
    assert not torch.equal(out, x)


def test_label_mixing_with_p0_gives_one_hot_targets() -> None:
    x = torch.rand(6, *RGB)
    out, targets = augmenter({"cutmix": {"p": 0.0}}, num_classes=4)(x, labels(6, 4))
    torch.testing.assert_close(targets, F.one_hot(labels(6, 4), 4).float())
    torch.testing.assert_close(out, x)


PIPELINE = [
    {"rotate": 15},
    "hflip",
    {"random_resized_crop": {"scale": [0.5, 1.0]}},
    {"color_jitter": {"saturation": 0.2, "hue": 0.05}},
    {"gaussian_noise": 0.05},
    "random_erasing",
    "mixup",
]


def _run(seed: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return augmenter(*PIPELINE)(x, labels(x.shape[0]))


def test_same_seed_same_output_different_seed_different_output() -> None:
    x = torch.rand(8, *RGB)
    a, ta = _run(1, x)
    b, tb = _run(1, x)
    c, tc = _run(2, x)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert not torch.equal(a, c) and not torch.equal(ta, tc)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([{"rotate": -5}], "augment[0].degrees: a single number d means the range [-d, d]"),
        (["hflip", {"vflip": 1.5}], "augment[1].p: Input should be less than or equal to 1"),
        (
            ["hflip", "vflip", {"random_crop": 40}],
            "augment[2].size: crop (40, 40) is larger than the image (16, 16)",
        ),
        (["hflp"], "augment[0]: unknown augmentation 'hflp' — did you mean 'hflip'?"),
        (["mixup", "hflip"], "augment[0]: mixup mixes labels, so it must come after every"),
        ([{"rotate": {"degree": 5}}], "augment[0].degree: unknown key — did you mean 'degrees'?"),
        ([{"gaussian_blur": 4}], "augment[0].kernel_size: must be odd"),
        ([{"normalize": {"mean": [0.5], "std": [0.5]}}], "augment[0]: normalize is not an augmentation in dlforge"),
        ([{"random_resized_crop": {"scale": [0.9, 0.1]}}], "augment[0].scale: write the range"),
    ],
)
def test_validation_names_the_path_and_the_problem(items: list[Any], expected: str) -> None:
    assert expected in problems_of(items)


def test_every_problem_is_reported_at_once() -> None:
    message = problems_of([{"rotate": -5}, "hflp", {"hflip": 2}])
    assert "augment[0].degrees" in message
    assert "augment[1]: unknown augmentation" in message
    assert "augment[2].p" in message


def test_crop_check_counts_the_padding() -> None:
    validate_augment(specs({"random_crop": {"size": 20, "padding": 2}}), RGB)
    assert "padded to (20, 20)" in problems_of([{"random_crop": {"size": 21, "padding": 2}}])


def test_label_mixers_may_share_the_end() -> None:
    validate_augment(specs("hflip", "cutmix", "mixup"), RGB)


def test_non_image_inputs_reject_augmentation() -> None:
    message = problems_of(["hflip"], shape=(12, 5))
    assert "augment[0]: augmentations need images (C, H, W) or waveforms (samples,)" in message
    assert "(12, 5)" in message
    assert "hflip is an image augmentation, but the inputs are waveforms" in problems_of(["hflip"], shape=(64,))


def test_color_ops_need_three_channels() -> None:
    message = problems_of([{"color_jitter": {"saturation": 0.3}}], shape=GRAY)
    assert "augment[0].saturation: needs 3-channel (RGB) images but the images have 1 channel" in (
        message
    )
    validate_augment(specs({"color_jitter": {"brightness": 0.3}}), GRAY)


# --- every registered op, on RGB and grayscale batches ----------------------------------------

EXAMPLES: dict[str, Any] = {
    "rotate": {"rotate": 30},
    "hflip": {"hflip": 0.5},
    "vflip": {"vflip": 0.5},
    "random_crop": {"random_crop": {"padding": 1}},
    "random_resized_crop": {"random_resized_crop": {"scale": [0.3, 1.0]}},
    "affine": {"affine": {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1], "shear": 5}},
    "color_jitter": {"color_jitter": {"saturation": 0.2, "hue": 0.05}},
    "gaussian_noise": {"gaussian_noise": 0.1},
    "gaussian_blur": {"gaussian_blur": {"kernel_size": 3, "p": 1.0}},
    "random_erasing": {"random_erasing": 1.0},
    "mixup": {"mixup": 0.4},
    "cutmix": {"cutmix": 1.0},
}
RGB_ONLY = {"color_jitter"}


# audio ops are exercised in test_audio_model.py
IMAGE_OPS = [n for n in AUGMENTATIONS.names() if AUGMENTATIONS.get(n).params.modality == "image"]


def test_every_registered_op_has_an_example() -> None:
    assert set(EXAMPLES) == set(IMAGE_OPS)


@pytest.mark.parametrize("shape", [RGB, GRAY], ids=["rgb16", "gray8"])
@pytest.mark.parametrize("name", IMAGE_OPS)
def test_every_op_keeps_shape_dtype_and_device(name: str, shape: tuple[int, int, int]) -> None:
    item = EXAMPLES[name]
    if name in RGB_ONLY and shape[0] != 3:
        assert "augment[0]." in problems_of([item], shape)
        return
    x, y = torch.rand(4, *shape), labels(4, 3)
    torch.manual_seed(0)
    out, targets = augmenter(item, shape=shape, num_classes=3)(x, y)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    if AUGMENTATIONS.get(name).params.mixes_labels:
        assert targets.shape == (4, 3)
    else:
        assert torch.equal(targets, y)

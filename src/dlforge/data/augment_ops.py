"""The augmentation ops: one pydantic settings model per op, each building its own (kornia) module.

The catalog at the bottom registers every op in AUGMENTATIONS; `dlforge augmentations` lists it and
augment.py assembles the batch pipeline from it. All randomness comes from torch's global RNG.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import kornia.augmentation as K
import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from dlforge.config.components import Component
from dlforge.registry import Registry

AUGMENTATIONS: Registry[Component[Any]] = Registry("augmentation")

ImageShape = tuple[int, int, int]


# --- parameter types -------------------------------------------------------------------------


def _symmetric(value: Any) -> Any:
    """`15` means the range [-15, 15]; a pair passes through unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if value < 0:
        raise PydanticCustomError(
            "negative_range",
            "a single number d means the range [-d, d], so it must be >= 0; "
            "for a one-sided range write a pair, e.g. [-10, 0]",
        )
    return (-value, value)


def _both(value: Any) -> Any:
    """`4` means (4, 4): one number for both axes or both ends of a range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return (value, value)


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise PydanticCustomError(
            "unordered_range", f"write the range as [min, max], e.g. [{pair[1]}, {pair[0]}]"
        )
    return pair


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Angle = Annotated[float, Field(ge=-360.0, le=360.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
AngleRange = Annotated[tuple[Angle, Angle], BeforeValidator(_symmetric), AfterValidator(_ordered)]
PositiveRange = Annotated[
    tuple[PositiveFloat, PositiveFloat], BeforeValidator(_both), AfterValidator(_ordered)
]
FractionRange = Annotated[
    tuple[Fraction, Fraction], BeforeValidator(_both), AfterValidator(_ordered)
]
Size = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(_both)]
Shift = Annotated[tuple[Unit, Unit], BeforeValidator(_both)]


class OpParams(BaseModel):
    """Settings of one op.

    Field constraints check what the settings alone can tell; `problems` adds the checks that
    need the image shape, and `build` makes the module.
    """

    model_config = ConfigDict(extra="forbid")
    mixes_labels: ClassVar[bool] = False
    modality: ClassVar[str] = "image"  # the inputs it takes: image (C, H, W) or audio (samples,)
    masks_spectrogram: ClassVar[bool] = False  # runs inside the model, on its front-end's output

    def problems(self, shape: ImageShape) -> list[tuple[str, str]]:
        """(field, problem) pairs; empty when the settings fit images of `shape` (C, H, W)."""
        return []

    def build(self, shape: ImageShape) -> nn.Module:
        """The module applying this op to (N, C, H, W) batches of images of `shape`."""
        raise NotImplementedError


# --- small modules kornia does not provide ---------------------------------------------------


class _PerSample(nn.Module):
    """Applies `op` to a random subset of the batch: kornia's crops draw `p` once per batch."""

    def __init__(self, op: nn.Module, p: float) -> None:
        super().__init__()
        self.op, self.p = op, p

    def forward(self, x: Tensor) -> Tensor:
        chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(chosen, self.op(x), x)


def _per_sample(op: nn.Module, p: float) -> nn.Module:
    if p >= 1.0:
        return op
    return _PerSample(op, p) if p > 0.0 else nn.Identity()


# --- geometric ops: each settings model builds its own module ---------------------------------


class RotateParams(OpParams):
    degrees: AngleRange = Field((-15.0, 15.0), description="d or [min, max]; + is anticlockwise")
    p: Probability = 1.0

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomRotation(degrees=self.degrees, p=self.p)


class HFlipParams(OpParams):
    p: Probability = 0.5

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomHorizontalFlip(p=self.p)


class VFlipParams(OpParams):
    p: Probability = 0.5

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomVerticalFlip(p=self.p)


class RandomCropParams(OpParams):
    size: Size | None = Field(None, description="crop (h, w) or n; default: the image size")
    padding: NonNegativeInt = Field(0, description="zeros added on each side before cropping")
    p: Probability = 1.0

    def crop(self, shape: ImageShape) -> tuple[int, int]:
        return self.size if self.size is not None else (shape[1], shape[2])

    def problems(self, shape: ImageShape) -> list[tuple[str, str]]:
        h, w = self.crop(shape)
        room = (shape[1] + 2 * self.padding, shape[2] + 2 * self.padding)
        if h <= room[0] and w <= room[1]:
            return []
        image = f"the image {shape[1:]}" + (f" padded to {room}" if self.padding else "")
        return [("size", f"crop {(h, w)} is larger than {image}; use at most {room}")]

    def build(self, shape: ImageShape) -> nn.Module:
        size = self.crop(shape)
        op: nn.Module = K.RandomCrop(size, padding=self.padding or None, p=1.0)
        if size != shape[1:]:  # back to the size the model expects
            op = nn.Sequential(op, nn.Upsample((shape[1], shape[2]), mode="bilinear"))
        return _per_sample(op, self.p)


class RandomResizedCropParams(OpParams):
    scale: FractionRange = Field((0.08, 1.0), description="area of the crop, fraction of image")
    ratio: PositiveRange = Field((3 / 4, 4 / 3), description="aspect ratio w/h of the crop")
    p: Probability = 1.0

    def build(self, shape: ImageShape) -> nn.Module:
        size = (shape[1], shape[2])
        op = K.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, p=1.0)
        return _per_sample(op, self.p)


class AffineParams(OpParams):
    degrees: AngleRange = Field((-10.0, 10.0), description="rotation: d or [min, max]")
    translate: Shift | None = Field(None, description="max shift (x, y), fraction of the size")
    scale: PositiveRange | None = Field(None, description="zoom factor [min, max]")
    shear: AngleRange | None = Field(None, description="x-shear in degrees: d or [min, max]")
    p: Probability = 1.0

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomAffine(self.degrees, self.translate, self.scale, self.shear, p=self.p)


# --- photometric ops -------------------------------------------------------------------------


class ColorJitterParams(OpParams):
    brightness: NonNegativeFloat = Field(0.2, description="factor from [1 - b, 1 + b]")
    contrast: NonNegativeFloat = Field(0.2, description="factor from [1 - c, 1 + c]")
    saturation: NonNegativeFloat = Field(0.0, description="factor from [1 - s, 1 + s]; RGB only")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="shift from [-h, h] turns; RGB only")
    p: Probability = 1.0

    def problems(self, shape: ImageShape) -> list[tuple[str, str]]:
        if shape[0] == 3:
            return []
        channels = f"the images have {shape[0]} channel{'s' if shape[0] != 1 else ''}"
        return [
            (name, f"needs 3-channel (RGB) images but {channels}; set {name}: 0 or remove it")
            for name in ("saturation", "hue")
            if getattr(self, name) > 0
        ]

    def build(self, shape: ImageShape) -> nn.Module:
        factors = (self.brightness, self.contrast, self.saturation, self.hue)
        return K.ColorJitter(*factors, p=self.p)


class GaussianNoiseParams(OpParams):
    std: NonNegativeFloat = Field(0.05, description="noise standard deviation (image is in [0, 1])")
    mean: float = 0.0
    clip: bool = Field(True, description="clamp the result back into [0, 1]")
    p: Probability = 1.0

    def build(self, shape: ImageShape) -> nn.Module:
        noise = K.RandomGaussianNoise(mean=self.mean, std=self.std, p=self.p)
        # Hardtanh(0, 1) is clamp to [0, 1]: later color ops and the model expect that range.
        return nn.Sequential(noise, nn.Hardtanh(0.0, 1.0)) if self.clip else noise


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise PydanticCustomError("even_kernel", f"must be odd to have a center, e.g. {value + 1}")
    return value


class GaussianBlurParams(OpParams):
    kernel_size: Annotated[int, Field(ge=3), AfterValidator(_odd)] = 3
    sigma: PositiveRange = Field((0.1, 2.0), description="blur strength: s or [min, max]")
    p: Probability = 1.0

    def problems(self, shape: ImageShape) -> list[tuple[str, str]]:
        if self.kernel_size <= min(shape[1:]):
            return []
        return [("kernel_size", f"{self.kernel_size} is larger than the image {shape[1:]}")]

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomGaussianBlur(self.kernel_size, self.sigma, p=self.p)


class RandomErasingParams(OpParams):
    p: Probability = 0.5
    scale: FractionRange = Field((0.02, 0.33), description="erased area, fraction of image")
    ratio: PositiveRange = Field((0.3, 3.3), description="aspect ratio of the erased box")
    value: Unit = Field(0.0, description="fill value")

    def build(self, shape: ImageShape) -> nn.Module:
        return K.RandomErasing(self.scale, self.ratio, value=self.value, p=self.p)


# --- label-mixing ops ------------------------------------------------------------------------


class LabelMixer(nn.Module):
    """Mixes each sample with a random partner, images and soft targets (N, K) alike."""

    def __init__(self, alpha: float, p: float) -> None:
        super().__init__()
        self.alpha, self.p = alpha, p

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, p={self.p}"

    def _lambdas(self, n: int, device: torch.device) -> Tensor:
        """Per-sample weight of the sample itself: Beta(alpha, alpha), or 1 when not chosen."""
        alpha = torch.tensor(self.alpha, device=device)
        lam = torch.distributions.Beta(alpha, alpha, validate_args=False).sample((n,))
        chosen = torch.rand(n, device=device) < self.p
        return torch.where(chosen, lam, torch.ones_like(lam))


class MixUp(LabelMixer):
    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        lam = self._lambdas(x.shape[0], x.device)
        partner = torch.randperm(x.shape[0], device=x.device)
        w = lam.view(-1, 1, 1, 1).to(x.dtype)
        x = w * x + (1 - w) * x[partner]
        return x, lam[:, None] * y + (1 - lam[:, None]) * y[partner]


class CutMix(LabelMixer):
    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        lam = self._lambdas(n, x.device)
        partner = torch.randperm(n, device=x.device)
        inside = _random_boxes(lam, h, w)
        x = torch.where(inside[:, None], x[partner], x)
        pasted = inside.float().mean(dim=(1, 2))[:, None]  # the box clipped at the border
        return x, (1 - pasted) * y + pasted * y[partner]


def _random_boxes(lam: Tensor, h: int, w: int) -> Tensor:
    """(N, H, W) masks of boxes covering about 1 - lam of each image, centers anywhere."""
    side = torch.sqrt(1 - lam)
    cy, cx = torch.rand_like(lam) * h, torch.rand_like(lam) * w
    rows = torch.arange(h, device=lam.device) + 0.5  # pixel centers
    cols = torch.arange(w, device=lam.device) + 0.5
    in_rows = (rows - cy[:, None]).abs() < (side * h / 2)[:, None]
    in_cols = (cols - cx[:, None]).abs() < (side * w / 2)[:, None]
    return in_rows[:, :, None] & in_cols[:, None, :]


class MixUpParams(OpParams):
    mixes_labels: ClassVar[bool] = True
    alpha: PositiveFloat = Field(0.2, description="Beta(alpha, alpha) draws the mixing weight")
    p: Probability = 1.0

    def build(self, shape: ImageShape) -> nn.Module:
        return MixUp(self.alpha, self.p)


class CutMixParams(MixUpParams):
    alpha: PositiveFloat = Field(1.0, description="Beta(alpha, alpha) draws the kept area")

    def build(self, shape: ImageShape) -> nn.Module:
        return CutMix(self.alpha, self.p)


# The whole catalog, registered explicitly: name, settings, short-form key, description.
_CATALOG: list[tuple[str, type[OpParams], str | None, str]] = [
    ("rotate", RotateParams, "degrees", "rotate by an angle drawn from degrees"),
    ("hflip", HFlipParams, "p", "mirror left-right"),
    ("vflip", VFlipParams, "p", "mirror top-bottom"),
    (
        "random_crop",
        RandomCropParams,
        "size",
        "pad, crop at a random place, resize back to the image size",
    ),
    (
        "random_resized_crop",
        RandomResizedCropParams,
        "scale",
        "crop a random region of random shape, resize back to the image size",
    ),
    ("affine", AffineParams, "degrees", "rotate, shift, zoom and shear in one resampling"),
    ("color_jitter", ColorJitterParams, None, "random brightness, contrast, saturation and hue"),
    ("gaussian_noise", GaussianNoiseParams, "std", "add pixel-wise gaussian noise"),
    ("gaussian_blur", GaussianBlurParams, "kernel_size", "blur with a sigma drawn per image"),
    ("random_erasing", RandomErasingParams, "p", "blank out a random box"),
    ("mixup", MixUpParams, "alpha", "blend pairs of images and their labels; must come last"),
    (
        "cutmix",
        CutMixParams,
        "alpha",
        "paste a box from a partner image, mix labels by its area; must come last",
    ),
]
for _name, _params, _primary, _doc in _CATALOG:
    AUGMENTATIONS.add(_name, Component(_params, _params.build, _primary, _doc))

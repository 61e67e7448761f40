"""Named image-generating architectures, expanded to layer lists like every other arch.

- `dcgan_generator`: dense → reshape to a small map → (upsample + conv | transposed conv) stages
  → conv to the image's channels (logits; the Generator applies the sigmoid);
- `dcgan_discriminator`: strided conv + leaky ReLU stages → flatten (the head is added by the model);
- `conv_autoencoder` and `unet` (skip connections): image → image of the same shape in [0, 1].
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from dlforge.config.components import Component
from dlforge.nn.archs import MODELS, tiny_params
from dlforge.nn.layers import Params, Shape


def _image(shape: Shape, arch: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{arch} needs images (channels, height, width), got {shape}")
    return shape[0], shape[1], shape[2]


class GeneratorParams(Params):
    width: int = Field(64, ge=1, description="channels of the last stage (doubling towards the start)")
    upsampling: Literal["upsample", "transposed"] = Field(
        "upsample", description="upsample + conv (no checkerboard artefacts) or transposed conv")
    start_size: int = Field(4, ge=1, description="the first feature map's size (halved from the image)")


def dcgan_generator(p: GeneratorParams, shape: Shape, num_classes: int) -> list[Any]:
    channels, h, w = _image(shape, "dcgan_generator")
    stages = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) > p.start_size:
        h, w, stages = h // 2, w // 2, stages + 1
    ch = p.width * 2**stages
    layers: list[Any] = [{"dense": ch * h * w}, {"reshape": [ch, h, w]}, "batchnorm2d", "relu"]
    for _ in range(stages):
        ch //= 2
        grow = ([{"upsample": 2}, {"conv2d": {"channels": ch, "kernel": 3}}] if p.upsampling == "upsample"
                else [{"conv_transpose2d": ch}])
        layers += [*grow, "batchnorm2d", "relu"]
    return [*layers, {"conv2d": {"channels": channels, "kernel": 3}}]


class DiscriminatorParams(Params):
    width: int = Field(64, ge=1, description="channels of the first stage (doubling each stage)")
    slope: float = Field(0.2, ge=0, description="leaky ReLU slope")
    dropout: float = Field(0.0, ge=0, lt=1)


def dcgan_discriminator(p: DiscriminatorParams, shape: Shape, num_classes: int) -> list[Any]:
    _, h, w = _image(shape, "dcgan_discriminator")
    size, ch, layers = min(h, w), p.width, [{"conv2d": {"channels": p.width, "kernel": 3}}, {"leaky_relu": p.slope}]
    while size >= 4:
        layers += [{"conv2d": {"channels": ch * 2, "kernel": 3, "stride": 2}}, {"leaky_relu": p.slope}]
        layers += [{"dropout": p.dropout}] if p.dropout else []
        size, ch = size // 2, ch * 2
    return [*layers, "flatten"]


class AutoencoderParams(Params):
    width: int = Field(32, ge=1)
    depth: int = Field(2, ge=1, description="downsampling stages (fewer if the image is small)")


def _depth(h: int, w: int, depth: int) -> int:
    usable = 0
    while usable < depth and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4:
        h, w, usable = h // 2, w // 2, usable + 1
    return usable


def _conv_bn_relu(ch: int) -> list[Any]:
    return [{"conv2d": ch}, "batchnorm2d", "relu"]


def conv_autoencoder(p: AutoencoderParams, shape: Shape, num_classes: int) -> list[Any]:
    channels, h, w = _image(shape, "conv_autoencoder")
    depth = _depth(h, w, p.depth)
    down = [*_conv_bn_relu(p.width)]
    for i in range(depth):
        down += [{"conv2d": {"channels": p.width * 2 ** (i + 1), "kernel": 3, "stride": 2}}, "batchnorm2d", "relu"]
    up: list[Any] = []
    for i in reversed(range(depth)):
        up += [{"upsample": 2}, *_conv_bn_relu(p.width * 2**i)]
    return [*down, *up, {"conv2d": {"channels": channels, "kernel": 1}}, "sigmoid"]


def _unet_level(depth: int, ch: int) -> list[Any]:
    block = [*_conv_bn_relu(ch), *_conv_bn_relu(ch)]
    if depth == 0:
        return block
    inner = [{"maxpool2d": 2}, *_unet_level(depth - 1, ch * 2), {"upsample": 2}, *_conv_bn_relu(ch)]
    return [*block, {"concat_skip": {"layers": inner}}, *_conv_bn_relu(ch)]


def unet(p: AutoencoderParams, shape: Shape, num_classes: int) -> list[Any]:
    channels, h, w = _image(shape, "unet")
    return [*_unet_level(_depth(h, w, p.depth), p.width), {"conv2d": {"channels": channels, "kernel": 1}}, "sigmoid"]


ARCH_TASKS = {  # which task each of these archs is for (`dlforge models` shows it; tests build them so)
    "dcgan_generator": "gan", "dcgan_discriminator": "gan", "conv_autoencoder": "denoise", "unet": "denoise",
    "dcgan_generator_tiny": "gan", "dcgan_discriminator_tiny": "gan", "conv_autoencoder_tiny": "denoise",
    "unet_tiny": "denoise",
}


def _register() -> None:
    add = MODELS.add
    add("dcgan_generator", Component(GeneratorParams, dcgan_generator, None,
                                     "GAN generator: latent → upsampling conv stages → image (task: gan)"))
    add("dcgan_discriminator", Component(DiscriminatorParams, dcgan_discriminator, None,
                                         "GAN discriminator: strided conv stages → features (task: gan)"))
    add("conv_autoencoder", Component(AutoencoderParams, conv_autoencoder, None,
                                      "image → image autoencoder (task: denoise)"))
    add("unet", Component(AutoencoderParams, unet, None, "image → image U-Net with skip connections (task: denoise)"))
    add("dcgan_generator_tiny", Component(tiny_params(GeneratorParams, width=4), dcgan_generator, None,
                                          "dcgan_generator at width 4"))
    add("dcgan_discriminator_tiny", Component(tiny_params(DiscriminatorParams, width=4), dcgan_discriminator, None,
                                              "dcgan_discriminator at width 4"))
    add("conv_autoencoder_tiny", Component(tiny_params(AutoencoderParams, width=4), conv_autoencoder, None,
                                           "conv_autoencoder at width 4"))
    add("unet_tiny", Component(tiny_params(AutoencoderParams, width=4, depth=1), unet, None,
                               "unet at width 4, depth 1"))


_register()

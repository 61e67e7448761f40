"""Settings of the generative tasks: `gan:` (task: gan) and `denoise:` (task: denoise).

`model:` is always the network that gets exported and served: the generator for a GAN, the
image-to-image network for denoising. What else a task trains lives in its own section here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlforge.config.common import ComponentSpec, ModelConfig, OptimizerConfig, Strict


class GanConfig(Strict):
    latent_dim: int = Field(64, ge=1, le=4096, description="size of the generator's noise vector")
    conditional: bool = Field(True, description="condition on the class label (label embedding / projection)")
    embed_dim: int = Field(16, ge=1, description="label embedding size fed to the generator (conditional)")
    discriminator: ModelConfig = Field(
        default_factory=lambda: ModelConfig(arch="dcgan_discriminator"),
        description="arch or layer list ending in a feature vector; the real/fake head is added")
    spectral_norm: bool = Field(True, description="spectral norm on every discriminator weight")
    loss: Literal["hinge", "bce"] = Field("hinge", description="hinge or non-saturating BCE")
    d_steps: int = Field(1, ge=1, le=10, description="discriminator updates per generator update")
    d_optimizer: OptimizerConfig | None = Field(
        None, description="the discriminator's optimizer; default: a copy of train.optimizer")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the generator (0 disables); used to evaluate")
    classifier: str | None = Field(
        None, description="a dlforge run directory or package trained on the same data: its features give the "
                          "FID and it judges the class of generated samples; default: FID on pixels")
    eval_samples: int = Field(1000, ge=64, le=100_000, description="generated samples per evaluation")
    grid_every: int = Field(1, ge=0, description="write report/samples_<epoch>.png every N epochs (0: never)")


def _default_noise() -> list[ComponentSpec]:
    return [ComponentSpec(type="gaussian", value=0.3)]


class DenoiseConfig(Strict):
    noise: list[ComponentSpec] = Field(default_factory=_default_noise,
                                       description="noise models applied in order (see `dlforge noises`)")
    loss: Literal["mse", "l1"] = "mse"

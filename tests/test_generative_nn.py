"""Generative building blocks: image layers, GAN/denoise archs, noise models, quality metrics."""

import numpy as np
import pytest
import torch

from dlforge.config import ComponentSpec, ConfigError, ModelConfig
from dlforge.data.noise import build_corruption
from dlforge.evaluate.image_quality import psnr_ssim
from dlforge.nn import ModelBuildError
from dlforge.nn.build import build_layers, layer_specs
from dlforge.nn.generative_archs import ARCH_TASKS
from dlforge.tasks.gan.nets import GanModel, build_discriminator, build_generator, ema_copy, ema_update

SHAPES = [(1, 8, 8), (3, 32, 32), (1, 28, 28)]


def _layers(layers: list, shape: tuple[int, ...]) -> tuple[torch.nn.Module, tuple[int, ...]]:
    return build_layers([ComponentSpec.model_validate(x) for x in layers], shape, "model.layers", torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", sorted(a for a, task in ARCH_TASKS.items() if task == "denoise"))
def test_denoise_archs_map_images_to_same_shape_in_unit_range(arch: str, shape: tuple[int, ...]) -> None:
    specs, where = layer_specs(ModelConfig(arch=arch), shape, 0)
    body, out = build_layers(specs, shape, where, torch.float32)
    assert out == shape
    y = body(torch.rand(2, *shape))
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", ["", "_tiny"])
def test_generator_and_discriminator_archs(shape: tuple[int, ...], size: str) -> None:
    g = build_generator(ModelConfig(arch=f"dcgan_generator{size}"), shape, latent_dim=8, num_classes=10, embed_dim=4)
    d = build_discriminator(ModelConfig(arch=f"dcgan_discriminator{size}"), shape, num_classes=10,
                            spectral_norm=True)
    images = g(torch.randn(3, 8), torch.tensor([0, 4, 9]))
    assert images.shape == (3, *shape) and images.min() >= 0 and images.max() <= 1
    assert d(images, torch.tensor([0, 4, 9])).shape == (3,)
    assert any("parametrizations" in name for name, _ in d.named_parameters())  # spectral norm applied


def test_generator_layer_list_must_end_at_the_image_shape() -> None:
    layers = [{"dense": 64}, {"reshape": [4, 4, 4]}, {"conv_transpose2d": 1}]  # 4x4 → 8x8, 1 channel
    g = build_generator(ModelConfig(layers=layers), (1, 8, 8), 16, 0, 4)
    assert g(torch.randn(2, 16)).shape == (2, 1, 8, 8)
    with pytest.raises(ModelBuildError, match=r"ends with shape \(1, 8, 8\) but the images are \(3, 8, 8\)"):
        build_generator(ModelConfig(layers=layers), (3, 8, 8), 16, 0, 4)


def test_reshape_names_the_dense_size_to_use() -> None:
    with pytest.raises(ModelBuildError, match=r"change the preceding `dense` to 64 units"):
        _layers([{"dense": 60}, {"reshape": [4, 4, 4]}], (8,))


def test_concat_skip_is_a_unet_level() -> None:
    _block, out = _layers([{"concat_skip": {"layers": [{"maxpool2d": 2}, {"conv2d": 6}, {"upsample": 2}]}}],
                         (2, 8, 8))
    assert out == (8, 8, 8)  # 2 input channels + 6 from the level
    with pytest.raises(ModelBuildError, match="concat_skip's layers must keep the size"):
        _layers([{"concat_skip": {"layers": [{"maxpool2d": 2}]}}], (2, 8, 8))


def test_gan_losses_and_ema() -> None:
    torch.manual_seed(0)
    g = build_generator(ModelConfig(arch="dcgan_generator_tiny"), (1, 8, 8), 8, 10, 4)
    d = build_discriminator(ModelConfig(arch="dcgan_discriminator_tiny"), (1, 8, 8), 10, False)
    gan = GanModel(g, d, ema_copy(g))
    z, y, real = torch.randn(4, 8), torch.tensor([1, 2, 3, 4]), torch.rand(4, 1, 8, 8)
    for loss in ("hinge", "bce"):
        d_loss, g_loss = gan("d", z, y, real, loss), gan("g", z, y, None, loss)
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    d_loss = gan("d", z, y, real, "hinge")
    d_loss.backward()
    assert all(p.grad is None for p in g.parameters())  # the D step never touches the generator
    assert not any(p.requires_grad for p in gan.ema.parameters())
    before = [p.clone() for p in gan.ema.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema_update(gan.ema, g, decay=0.9)
    moved = [(e - b).abs().max().item() for e, b in zip(gan.ema.parameters(), before, strict=True)]
    assert all(abs(m - 0.1) < 1e-5 for m in moved)  # (1 - decay) of the +1 step


def test_noise_models_keep_unit_range_and_are_reproducible() -> None:
    clean = torch.rand(16, 1, 32, 32)
    for spec in ({"gaussian": 0.3}, {"salt_pepper": 0.1}, {"mask": 0.25}):
        noise = build_corruption([ComponentSpec.model_validate(spec)])
        a = noise(clean, torch.Generator().manual_seed(1))
        b = noise(clean, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, clean)
    salt_pepper = build_corruption([ComponentSpec.model_validate({"salt_pepper": 0.1})])
    hit = salt_pepper(clean, torch.Generator().manual_seed(2))
    assert 0.08 < (hit != clean).float().mean().item() < 0.12  # 16,384 pixels: deterministic for this seed


def test_noise_config_errors_name_the_path() -> None:
    with pytest.raises(ConfigError, match=r"denoise.noise\[0\]: unknown noise model 'gausian' — did you mean"):
        build_corruption([ComponentSpec.model_validate("gausian")])
    with pytest.raises(ConfigError, match=r"denoise.noise\[0\].sigma"):
        build_corruption([ComponentSpec.model_validate({"gaussian": -1})])


def test_psnr_of_known_error() -> None:
    clean = torch.full((2, 1, 8, 8), 0.5)
    noisy = clean + 0.1  # MSE 0.01 → PSNR 20 dB exactly
    assert psnr_ssim(noisy, clean)["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert psnr_ssim(clean, clean)["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_seed_latents_are_numpys_pcg64() -> None:
    from dlforge.tasks.gan.codec import latents_from_seeds

    z = latents_from_seeds(np.array([5, 5, 6]), 4)
    assert z.dtype == np.float32 and z.shape == (3, 4)
    np.testing.assert_array_equal(z[0], np.random.default_rng(5).standard_normal(4, dtype=np.float32))
    assert np.array_equal(z[0], z[1]) and not np.array_equal(z[0], z[2])

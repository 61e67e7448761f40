"""Audio front-end layers (against a numpy reference, and in ONNX) and audio augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.fft import dct

from dlforge.config import ComponentSpec, ConfigError, ModelConfig
from dlforge.data.augment import build_augmenter, validate_augment
from dlforge.export.onnx import export_onnx, parity_diff
from dlforge.nn import build_model
from dlforge.nn.audio import MelParams, MelSpectrogram, Mfcc, MfccParams, mel_filters
from dlforge.nn.build import InputNormalize

RATE = 8000


def reference_log_mel(wave: np.ndarray, p: MelParams) -> np.ndarray:
    """Frames centred on multiples of hop (zero padded), Hann window, |rfft|², HTK mel filters, log."""
    padded = np.pad(wave, p.n_fft // 2)
    frames = np.stack([padded[i:i + p.n_fft] for i in range(0, len(padded) - p.n_fft + 1, p.hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(p.n_fft) / p.n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    fbank = mel_filters(p.sample_rate, p.n_fft, p.n_mels, p.f_min, p.f_max or p.sample_rate / 2)
    return np.log(power @ fbank + p.eps).T


@pytest.mark.parametrize("stft", ["conv", "onnx"])
def test_log_mel_matches_a_numpy_reference(stft: str) -> None:
    p = MelParams(sample_rate=RATE, n_fft=256, hop=80, n_mels=32, stft=stft)  # type: ignore[arg-type]
    wave = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    out = MelSpectrogram(p)(torch.from_numpy(wave)[None]).numpy()
    assert out.shape == (1, 1, 32, RATE // 80 + 1)
    np.testing.assert_allclose(out[0, 0], reference_log_mel(wave.astype(np.float64), p), atol=2e-3)


def test_mel_filters_peak_at_their_centres_and_tile_the_band() -> None:
    fb = mel_filters(RATE, 256, 20, 0.0, RATE / 2)
    assert fb.shape == (129, 20) and fb.max() <= 1.0 and (fb >= 0).all()
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) > 0).all()  # centres rise, spaced wider at high frequencies
    assert np.diff(peaks)[-1] > np.diff(peaks)[0]


def test_mfcc_is_the_dct_of_the_log_mel() -> None:
    p = MfccParams(sample_rate=RATE, n_fft=256, hop=80, n_mels=32, n_mfcc=13)
    x = torch.randn(2, RATE) * 0.1
    log_mel = MelSpectrogram(p)(x)[:, 0].numpy()
    expected = dct(log_mel, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(Mfcc(p)(x)[:, 0].numpy(), expected, atol=1e-3)


def test_front_end_models_take_raw_waveforms_without_input_normalisation() -> None:
    net = build_model(ModelConfig(arch="audio_cnn_tiny", params={"sample_rate": RATE}), (RATE,), 10)
    assert not isinstance(net.normalize, InputNormalize)
    assert net(torch.randn(3, RATE)).shape == (3, 10)
    assert not any("filters" in k or "basis" in k for k in net.state_dict())  # derived, not stored


def test_front_end_refuses_non_waveform_inputs() -> None:
    from dlforge.nn.build import ModelBuildError

    with pytest.raises(ModelBuildError, match="mono waveform"):
        build_model(ModelConfig(layers=[{"melspectrogram": {}}, "flatten", {"dense": 2}]), (3, 8, 8), 2)


@pytest.mark.slow
@pytest.mark.parametrize("stft", ["conv", "onnx"])
def test_front_end_exports_to_onnx_with_parity(tmp_path: Path, stft: str) -> None:
    cfg = ModelConfig(arch="audio_cnn_tiny", params={"sample_rate": RATE, "n_fft": 256, "hop": 80, "stft": stft,
                                                     "frontend": "mfcc" if stft == "onnx" else "melspectrogram"})
    net = build_model(cfg, (RATE,), 10).eval()
    x = torch.randn(4, RATE) * 0.2
    export_onnx(net, x, tmp_path / "m.onnx", 18)
    assert parity_diff(net, tmp_path / "m.onnx", x) < 1e-4


# --- augmentations ----------------------------------------------------------------------------


def augment(specs: list[object], x: torch.Tensor) -> torch.Tensor:
    aug = build_augmenter([ComponentSpec.model_validate(s) for s in specs], tuple(x.shape[1:]), 2)
    assert aug is not None
    torch.manual_seed(0)
    return aug(x, torch.zeros(len(x), dtype=torch.long))[0]


def test_time_shift_moves_each_clip_and_fills_zeros() -> None:
    x = torch.arange(1, 101, dtype=torch.float32).repeat(8, 1)
    out = augment([{"time_shift": {"max_fraction": 0.2}}], x)
    for row in out:
        kept = row[row != 0]
        shift = int(kept[0].item()) - 1 if row[0] != 0 else -int((row == 0).sum().item())
        assert torch.equal(kept, torch.arange(1, 101, dtype=torch.float32)[max(shift, 0):][: len(kept)])
        assert abs(shift) <= 20
    assert len({int((r == 0).sum()) for r in out}) > 1  # per-clip shifts


def test_gain_and_noise_follow_their_settings() -> None:
    x = torch.randn(64, 4000) * 0.1
    gained = augment([{"gain": [-6, 6]}], x)
    ratio_db = 20 * torch.log10(gained.std(dim=1) / x.std(dim=1))
    assert ratio_db.min() >= -6.01 and ratio_db.max() <= 6.01 and ratio_db.std() > 1
    noisy = augment([{"noise": {"snr_db": [20, 20], "p": 1.0}}], x)
    snr = 10 * torch.log10(x.pow(2).mean(1) / (noisy - x).pow(2).mean(1))
    assert (snr - 20).abs().max() < 0.5


def dominant_hz(wave: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.argmax(spectrum)) * RATE / len(wave)


def test_speed_scales_every_frequency_by_its_factor_about_the_centre() -> None:
    t = torch.arange(RATE // 2) / RATE
    burst = torch.sin(2 * torch.pi * 500 * t) * torch.hann_window(RATE // 2)  # 0.5 s of 500 Hz
    x = torch.nn.functional.pad(burst, (RATE // 4, RATE // 4)).repeat(4, 1)  # in the middle of a 1 s clip
    faster = augment([{"speed": [1.25, 1.25]}], x)
    slower = augment([{"speed": 0.8}], x)
    middle = slice(3 * RATE // 8, 5 * RATE // 8)
    assert dominant_hz(faster[0, middle]) == pytest.approx(625, abs=4)
    assert dominant_hz(slower[0, middle]) == pytest.approx(400, abs=4)

    def support(row: torch.Tensor) -> tuple[int, int]:
        inside = (row.abs() > 1e-4).nonzero()
        return int(inside[0]), int(inside[-1])

    first, last = support(faster[0])  # 0.4 s long now, still centred
    assert abs(first - 0.3 * RATE) < 40 and abs(last - 0.7 * RATE) < 40
    first, last = support(slower[0])  # 0.625 s
    assert abs(first - 0.1875 * RATE) < 40 and abs(last - 0.8125 * RATE) < 40
    drawn = augment([{"speed": [0.8, 1.25]}], x)
    assert len({round(dominant_hz(row[middle])) for row in drawn}) > 1  # per-clip factors
    with pytest.raises(ConfigError, match=r"augment\[0\]\.factor.*min, max"):
        validate_augment([ComponentSpec.model_validate({"speed": [1.2, 0.8]})], (RATE,))


def test_spec_masks_run_inside_the_model_in_training_only() -> None:
    net = build_model(ModelConfig(arch="audio_cnn_tiny", params={"sample_rate": RATE}), (RATE,), 2)
    aug = build_augmenter([ComponentSpec.model_validate({"time_mask": {"max_frames": 8, "count": 1}})], (RATE,), 2)
    assert aug is not None
    aug.attach(net)
    frontend = net.body[0]
    seen: list[torch.Tensor] = []
    net.body[1].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    x = torch.randn(16, RATE) * 0.1
    torch.manual_seed(0)
    net.train()(x)
    net.eval()(x)
    clean = frontend(x)  # the front-end alone, in eval mode: no masks
    assert torch.equal(seen[1], clean)
    masked = seen[0] != clean
    assert masked.any(dim=(1, 2, 3)).float().mean() > 0.8  # nearly every clip got a mask
    assert torch.equal(masked, masked.all(dim=2, keepdim=True).expand_as(masked))  # whole frames are masked
    means = clean.mean(dim=(2, 3), keepdim=True).expand_as(clean)
    assert torch.allclose(seen[0][masked], means[masked])  # masks hold each clip's mean


def test_audio_and_image_ops_refuse_the_other_modality() -> None:
    with pytest.raises(ConfigError, match=r"augment\[0\]: rotate is an image augmentation.*waveforms"):
        validate_augment([ComponentSpec.model_validate({"rotate": 10})], (RATE,))
    with pytest.raises(ConfigError, match=r"augment\[0\]: gain is an audio augmentation"):
        validate_augment([ComponentSpec.model_validate({"gain": [-3, 3]})], (1, 8, 8))
    aug = build_augmenter([ComponentSpec.model_validate("time_mask")], (RATE,), 2)
    assert aug is not None
    with pytest.raises(ConfigError, match="no melspectrogram or mfcc layer"):
        aug.attach(build_model(ModelConfig(arch="mlp_tiny"), (RATE,), 2))

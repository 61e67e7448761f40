"""Audio data: decoding, resampling, crop/pad, the audio_folder dataset, speaker splits, spoken digits."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dlforge.audio_io import AudioError, AudioFormat, fit_length, load_clip
from dlforge.cli import app
from dlforge.config import ConfigError, DataConfig, parse_config
from dlforge.data.datasets import DataError
from dlforge.data.samples import take
from dlforge.data.splits import load_data
from dlforge.data.spoken_digits import DIGITS, GROUP_BY, generate
from dlforge.experiment import check_experiment
from tests.audio_helpers import tone, tone_folder, wav_bytes


def audio_cfg(path: Path, **params: object) -> DataConfig:
    return DataConfig(dataset="audio_folder", params={"path": str(path), **params}, val_fraction=0.25,
                      test_fraction=0.25)


def test_a_clip_is_resampled_mixed_to_mono_and_padded_like_training() -> None:
    fmt = AudioFormat(sample_rate=8000, duration=1.0)
    stereo = tone(440, 0.5, 22050, channels=2)
    stereo[:, 1] = 0.0  # the mono mix is the channel mean: half the left channel
    clip = load_clip(wav_bytes(stereo, 22050, "FLOAT"), fmt)
    assert clip.shape == (8000,) and clip.dtype == np.float32
    inside = clip[2500:5500]  # centred: 0.5 s of tone in the middle of 1 s
    assert 0.24 < np.abs(inside).max() < 0.26 and np.abs(clip[:1500]).max() == 0.0
    spectrum = np.abs(np.fft.rfft(inside))
    assert abs(np.argmax(spectrum) * 8000 / len(inside) - 440) < 5  # still 440 Hz after resampling


def test_crop_and_pad_are_seeded() -> None:
    wave = np.arange(10, dtype=np.float32)
    a = fit_length(wave, 4, np.random.default_rng(1))
    assert np.array_equal(a, fit_length(wave, 4, np.random.default_rng(1)))
    assert np.array_equal(a, np.arange(a[0], a[0] + 4))
    padded = fit_length(wave, 14, np.random.default_rng(1))
    assert len(padded) == 14 and padded.sum() == wave.sum()
    assert np.array_equal(fit_length(wave, 6, None), np.arange(2, 8, dtype=np.float32))  # centred


@pytest.mark.parametrize(("data", "fmt", "message"), [
    (b"RIFF....WAVEnot really", AudioFormat(8000, 1.0), "not audio"),
    (wav_bytes(tone(440, 2.0, 8000), 8000), AudioFormat(8000, 1.0), "too long"),
    (wav_bytes(tone(440, 0.5, 8000, channels=2), 8000), AudioFormat(8000, 1.0, mix_channels=False), "2 channels"),
    (wav_bytes(tone(440, 0.5, 16000), 16000), AudioFormat(8000, 1.0, resample=False), "16000 Hz"),
    (wav_bytes(np.zeros(0, np.float32), 8000), AudioFormat(8000, 1.0), "no samples"),
])
def test_unusable_audio_is_refused_with_the_reason(data: bytes, fmt: AudioFormat, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        load_clip(data, fmt, max_duration=fmt.duration)


def test_audio_folder_resamples_and_splits_by_speaker(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "tones", rate=16000, per_class=3, speakers=4)
    bundle = load_data(audio_cfg(root, sample_rate=8000, duration=0.5, group_by=r"^(spk\d+)_"), seed=0)
    assert bundle.input_shape == (4000,) and bundle.labels == ["high", "low"]
    assert bundle.preprocessing.kind == "audio" and bundle.preprocessing.sample_rate == 8000
    assert "mean" not in bundle.preprocessing.model_dump()  # the front-end layer scales waveforms, not a mean/std
    groups = bundle.split_groups
    assert groups is not None and all(groups.values())
    assert not set(groups["train"]) & set(groups["test"]) and not set(groups["val"]) & set(groups["test"])
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 24
    again = load_data(audio_cfg(root, sample_rate=8000, duration=0.5, group_by=r"^(spk\d+)_"), seed=0)
    assert np.array_equal(take(bundle.test)[0].numpy(), take(again.test)[0].numpy())


def test_groups_from_a_sidecar_csv(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "tones", per_class=2, speakers=4)
    rows = ["path,who"] + [f"{p.parent.name}/{p.name},{p.name[:4]}" for p in sorted(root.glob("*/*.wav"))]
    (root / "speakers.csv").write_text("\n".join(rows) + "\n")
    rule = {"csv": "speakers.csv", "column": "who", "file_column": "path"}
    groups = load_data(audio_cfg(root, duration=0.5, group_by=rule), seed=0).split_groups
    assert groups is not None
    assert sorted(g for split in groups.values() for g in split) == ["spk0", "spk1", "spk2", "spk3"]


def test_audio_folder_errors_name_the_problem(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "tones", per_class=2, speakers=4)
    with pytest.raises(DataError, match="does not match the file name"):
        load_data(audio_cfg(root, group_by=r"^speaker(\d)"), seed=0)
    with pytest.raises(DataError, match=r"1 group\(s\) found"):
        load_data(audio_cfg(root, group_by=r"^(spk)"), seed=0)
    (root / "low" / "broken.wav").write_bytes(b"not a wav at all")
    bundle = load_data(audio_cfg(root), seed=0)  # files are read when a loader asks for them
    with pytest.raises(DataError, match=r"broken\.wav: not audio .*set data.params.skip_unreadable: true"):
        [take(split) for split in (bundle.train, bundle.val, bundle.test)]
    lenient = load_data(audio_cfg(root, skip_unreadable=True), seed=0)
    assert sum(len(take(split)[0]) for split in (lenient.train, lenient.val, lenient.test)) == 17
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav/.flac/.ogg files in class folder.*empty"):
        load_data(audio_cfg(root), seed=0)


def test_config_mistakes_are_reported_at_load(tmp_path: Path) -> None:
    base = {"data": {"dataset": "audio_folder", "params": {"path": str(tmp_path), "sample_rate": 8000}},
            "model": {"arch": "audio_cnn_tiny"}}
    with pytest.raises(ConfigError, match=r"model.params.sample_rate: 16000 Hz, but data.params.sample_rate is 8000"):
        check_experiment(parse_config(base))
    bad_regex = {**base, "data": {**base["data"], "params": {"path": str(tmp_path), "group_by": "(["}}}
    with pytest.raises(ConfigError, match="group_by: .*not a valid regular expression"):
        check_experiment(parse_config(bad_regex))


def test_spoken_digits_are_deterministic_and_named_by_voice(tmp_path: Path) -> None:
    # seed 11 picks Hugo, max and victor: victor is breathy, its noise comes from eSpeak's own random
    # generator, which eSpeak seeds from the clock unless we seed it (the runs are seconds apart)
    generate(tmp_path / "a", voices=3, takes=1, seed=11)
    generate(tmp_path / "b", voices=3, takes=1, seed=11)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert len(files) == 30 and {f.parts[0] for f in files} == set(DIGITS)

    def digest(root: Path) -> str:
        return hashlib.sha256(b"".join((root / f).read_bytes() for f in files)).hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    voices = {f.name.split("__")[0] for f in files}
    assert len(voices) == 3
    wave, rate = sf.read(tmp_path / "a" / files[0])
    assert rate == 16000 and 0.15 < len(wave) / rate < 1.2 and np.abs(wave).max() > 0.1
    assert all(re.search(GROUP_BY, f.name).group(1) == f.name.split("__")[0] for f in files)  # type: ignore[union-attr]


def test_data_command_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["data", "spoken-digits", "--out", str(tmp_path), "--voices", "3"])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"

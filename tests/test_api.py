"""The Python API: `import pianotx` is cheap; each function is the command's code."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, melody, synth, write_pair

import pianotx
from pianotx.transcribe import BUNDLED_MODEL


def test_import_pianotx_loads_neither_tensorflow_nor_mlflow():
    heavy = "('tensorflow', 'keras', 'mlflow')"
    code = f"import sys, pianotx; pianotx.Dataset; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def model():
    return pianotx.load_model(str(BUNDLED_MODEL))


def test_transcribe_a_file_or_its_samples_gives_the_same_notes(model, tmp_path):
    samples = synth(melody(3, seconds=12))
    sf.write(tmp_path / "m.wav", samples, SR)
    from_file = pianotx.transcribe(tmp_path / "m.wav", model=model)
    from_samples = pianotx.transcribe(samples, model=model, sample_rate=SR)
    assert len(from_file) > 5
    assert from_samples.pitches.tolist() == from_file.pitches.tolist()
    np.testing.assert_allclose(from_samples.intervals, from_file.intervals, atol=1e-6)
    # the same code as `pianotx transcribe`
    assert pianotx.transcribe.transcribe_file(model, tmp_path / "m.wav", tmp_path / "out").notes == len(from_file)


def test_samples_are_mixed_to_mono_and_resampled(model):
    import soxr

    mono = synth(melody(5, seconds=10))
    at_44k = soxr.resample(mono, SR, 44100).astype(np.float32)
    notes = pianotx.transcribe(np.stack([at_44k, at_44k], axis=1), model=model, sample_rate=44100)
    expected = pianotx.transcribe(mono, model=model, sample_rate=SR)
    assert len(expected) > 5 and notes.pitches.tolist() == expected.pitches.tolist()


def test_samples_need_their_rate_and_a_shape(model):
    with pytest.raises(ValueError, match="^transcribe: samples need their sample_rate$"):
        pianotx.transcribe(np.zeros(SR, np.float32), model=model)
    with pytest.raises(
        ValueError, match=r"^transcribe: samples must be \(n,\) or \(n, channels\), not shape \(2, 2, 2\)$"
    ):
        pianotx.transcribe(np.zeros((2, 2, 2), np.float32), model=model, sample_rate=SR)


def test_dataset_and_evaluate(tmp_path):
    from pianotx.build import build_dataset

    for i in range(4):
        write_pair(tmp_path / "pairs", f"p{i}", melody(i, seconds=4.0))
    build_dataset(tmp_path / "pairs", tmp_path / "ds", workers=1, progress=False, log=lambda _: None)
    data = pianotx.Dataset(tmp_path / "ds")
    assert sum(data.splits.values()) == 4
    piece = data.pieces()[0]
    features, frames, onsets = data.arrays(piece)
    assert features.shape == (piece["n_frames"], data.features.n_bins)
    assert frames.shape == onsets.shape == (piece["n_frames"], 88)
    assert len(data.notes(piece)) > 0
    split = next(s for s, n in data.splits.items() if n)
    report = pianotx.evaluate(tmp_path / "ds", model=str(BUNDLED_MODEL), split=split)
    assert len(report["per_piece"]) == data.splits[split]
    assert 0.0 <= report["mean"]["note_f1"] <= 1.0


def test_pianotx_transcribe_is_the_function_and_the_module():
    import pianotx.transcribe as module

    assert pianotx.transcribe is module and callable(module) and callable(pianotx.evaluate)

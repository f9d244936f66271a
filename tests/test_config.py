import pytest

from pianotx.config import ConfigError, FeatureConfig, ModelConfig, TrainConfig, from_dict


def test_defaults_and_frame_rate():
    fc = FeatureConfig()
    assert fc.frame_rate == 31.25
    assert fc.fmin == 27.5
    assert fc.n_frames(16000) == 32


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) lstm_unit;"):
        from_dict(ModelConfig, {"lstm_unit": 3}, "model")


def test_types_are_checked_and_ints_coerced():
    assert from_dict(ModelConfig, {"lstm_units": 64.0}).lstm_units == 64
    with pytest.raises(ConfigError, match="must be an integer"):
        from_dict(ModelConfig, {"lstm_units": 64.5})
    with pytest.raises(ConfigError, match="must be true or false"):
        from_dict(ModelConfig, {"bidirectional": "yes"})
    with pytest.raises(ConfigError, match="optimizer must be"):
        from_dict(TrainConfig, {"optimizer": "rmsprop"})
    assert from_dict(TrainConfig, {"learning_rate": 1}).learning_rate == 1.0


def test_hop_must_suit_the_cqt():
    with pytest.raises(ValueError, match="divisible"):
        FeatureConfig(hop_length=500)


def test_chunk_sizes_must_be_positive_whole_numbers():
    from typer.testing import CliRunner

    from pianotx.cli import app
    from pianotx.config import ChunkConfig

    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match=f"^chunk_frames must be a whole number of at least 1, got {bad!r}$"):
            ChunkConfig(chunk_frames=bad)
    result = CliRunner().invoke(app, ["data", "build", "in", "out", "--chunk-frames", "0"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: options: chunk_frames must be a whole number of at least 1, got 0"

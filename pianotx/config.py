"""Typed, frozen configuration for every stage.

Each stage has one dataclass with documented defaults. ``from_dict`` builds one from
plain data (a YAML file, a manifest, a model's metadata) and rejects unknown keys, so a
typo is an error rather than a silently ignored setting.

Piano range: MIDI 21 (A0) .. 108 (C8), 88 keys. The default CQT starts at A0 with 12
bins per octave, so bin ``k`` is centred on MIDI note ``21 + k``; 84 bins reach G#7.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from pianotx.errors import PianotxError

MIDI_MIN = 21
MIDI_MAX = 108
N_KEYS = MIDI_MAX - MIDI_MIN + 1  # 88
TRAIN_LAYERS = ("all", "frames", "heads", "velocity")  # TrainConfig.train_layers
A0_HZ = 440.0 * 2.0 ** ((MIDI_MIN - 69) / 12.0)  # 27.5 Hz

T = TypeVar("T")


class ConfigError(PianotxError, ValueError):
    """A configuration value or key is invalid."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting keys it does not declare.

    Args:
        cls: a dataclass type of this module.
        data: mapping of field name to value; ``None`` gives the defaults.
        where: names the source in error messages (a file, a section).

    Raises:
        ConfigError: on an unknown key or a value of the wrong type.
    """
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
    for name, value in data.items():
        default = getattr(cls, name, None)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool):
                if float(value) != int(value):
                    raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
                data[name] = int(value)
            else:
                data[name] = float(value)
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def with_values(cls: type[T], where: str = "options", **values: Any) -> T:
    """``cls`` with the values given, ``None`` meaning "keep the default".

    For command-line options, which default to ``None`` so that defaults live in the
    dataclasses only. Unknown names are refused as in :func:`from_dict`.
    """
    return from_dict(cls, {k: v for k, v in values.items() if v is not None}, where)


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (help texts quote it)."""
    found = {f.name: f for f in fields(cls)}[name]
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return found.default


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass (JSON and YAML friendly)."""
    return dataclasses.asdict(obj)


@dataclass(frozen=True)
class FeatureConfig:
    """Constant-Q log-magnitude features.

    Frame ``i`` is centred on ``i * hop_length / sample_rate`` seconds (librosa's
    ``center=True``); a clip of ``n`` samples has ``1 + n // hop_length`` frames.
    Defaults: 16 kHz, hop 512, so 31.25 frames/s (32 ms per frame); 84 bins from A0.
    """

    sample_rate: int = 16000
    hop_length: int = 512
    n_bins: int = 84
    bins_per_octave: int = 12
    fmin: float = A0_HZ
    # Magnitudes are converted to dB, floored at -top_db and mapped to [0, ~1]:
    # (dB + top_db) / top_db. Silence is exactly 0, so zero padding is silence.
    top_db: float = 80.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_bins <= 0:
            raise ValueError("sample_rate, hop_length and n_bins must be positive")
        n_octaves = -(-self.n_bins // self.bins_per_octave)
        if self.hop_length % (2 ** max(n_octaves - 1, 0)):
            raise ValueError(
                f"hop_length {self.hop_length} must be divisible by 2**(octaves-1) = "
                f"{2 ** (n_octaves - 1)} for a {self.n_bins}-bin CQT"
            )

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Number of feature frames for a clip of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length


@dataclass(frozen=True)
class LabelConfig:
    """How MIDI notes become frame and onset rolls."""

    sustain_pedal: bool = True  # CC64 >= 64 holds notes until the pedal is released
    pedal_threshold: int = 64


@dataclass(frozen=True)
class AlignConfig:
    """Audio-vs-MIDI offset search (see :mod:`pianotx.align`)."""

    method: str = "onsets"  # "onsets" (pitch-wise onset strength) or "energy" (the seed's)
    max_lag_seconds: float = 2.0
    min_confidence: float = 4.0  # peak strength (z-score) below which a piece is excluded

    def __post_init__(self) -> None:
        if self.method not in ("onsets", "energy"):
            raise ValueError(f"align method must be 'onsets' or 'energy', got {self.method!r}")
        if self.max_lag_seconds <= 0 or self.min_confidence < 0:
            raise ValueError(
                f"max_lag_seconds must be positive and min_confidence >= 0, got {self.max_lag_seconds} "
                f"and {self.min_confidence}"
            )


@dataclass(frozen=True)
class ChunkConfig:
    """Fixed-length training chunks. The last partial chunk is zero-padded (silence)."""

    chunk_frames: int = 512
    shard_chunks: int = 1024  # chunks per .npy shard

    def __post_init__(self) -> None:
        for name in ("chunk_frames", "shard_chunks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test split by piece (pair folders); MAESTRO uses its own."""

    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # Piano (render.json's name) held out for the test split; "auto" = the last one
    # rendered, "none" = no held-out piano.
    holdout_piano: str = "auto"
    # A second piano held out for the validation split, so that model selection and
    # decoding tuning hear a piano training never did; "none" = validation hears the
    # training pianos (docs/results.md, "What each part is worth", says what each costs).
    validation_piano: str = "none"


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines a built dataset (and its fingerprint)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class ModelConfig:
    """The transcriber's architecture. Defaults are exactly the seed model:
    LSTM(120, dropout 0.2, recurrent dropout 0.2) -> Dense(120, relu) -> Dense(88, sigmoid).

    Any ``recurrent_dropout`` above 0 disables the fused cuDNN kernel on GPU and trains
    ~3.5x slower on CPU; searches should not depend on it.

    Optional parts (see :mod:`pianotx.model`): a convolutional front-end before the
    LSTMs (``conv_layers > 0``, the acoustic stack of Kelz et al. 2016 and Onsets and
    Frames) and an onset head (``onset_head``) whose predictions, gradient stopped, feed
    the frame LSTMs.
    """

    lstm_layers: int = 1
    lstm_units: int = 120
    dropout: float = 0.2
    recurrent_dropout: float = 0.2
    bidirectional: bool = False
    dense_units: int = 120  # 0: no hidden dense layer
    # Standardise each CQT bin with the training split's mean and deviation (a
    # non-trainable first layer; no trainable parameters). Without it the seed
    # architecture barely leaves the all-silent prior in 10 epochs on the default corpus.
    normalize_input: bool = True
    # Convolutional front-end: 3x3 convolutions over (time, frequency), each with batch
    # norm and ReLU. Layers 1-2 have conv_filters channels, later ones twice as many;
    # each of the last conv_pools layers (at most all of them) max-pools frequency by 2
    # and applies conv_dropout. Frequency x channels are then projected by
    # Dense(conv_dense_units, relu) + conv_dropout (0 units: flattened straight into the
    # LSTMs, which left the all-silent prior faster in short CPU runs). Time is never
    # pooled. 0 layers: no front-end (the seed). Onsets and Frames: 3 layers, 48
    # filters, 2 pools over 229 mel bins, 768 units.
    conv_layers: int = 0
    conv_filters: int = 32
    conv_pools: int = 2
    conv_dense_units: int = 256
    conv_dropout: float = 0.25
    # Onset head: its own LSTM stack (lstm_layers x onset_lstm_units, bidirectional as
    # the frame stack; 0 units: lstm_units) -> Dense(88, sigmoid) ``onsets`` output.
    onset_head: bool = False
    onset_lstm_units: int = 0
    # Velocity head (Onsets and Frames' velocity stack, on pianotx's trunk): the trunk
    # features, and with an onset head its last LSTM's output, -> Dense(velocity_units,
    # relu) -> Dense(88, sigmoid) ``velocities`` (through an LSTM first with
    # velocity_lstm_units): each key's MIDI velocity / 127 at the frames where a note starts, trained only there (see
    # :class:`pianotx.model.OnsetVelocityLoss`). Decoding gives each note the velocity
    # at its first frame. Off: velocity comes from the mean frame probability.
    velocity_head: bool = False
    velocity_units: int = 64
    # >0: a (bidirectional as the other stacks) LSTM of this many units first, so the
    # head hears each onset in context (how loud the piece around it is).
    velocity_lstm_units: int = 0

    def __post_init__(self) -> None:
        if self.lstm_layers < 1 or self.lstm_units < 1 or self.dense_units < 0:
            raise ValueError("lstm_layers and lstm_units must be >= 1, dense_units >= 0")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.recurrent_dropout < 1.0):
            raise ValueError("dropout and recurrent_dropout must be in [0, 1)")
        if min(self.conv_layers, self.conv_pools, self.conv_dense_units) < 0 or self.conv_filters < 1:
            raise ValueError("conv_layers, conv_pools and conv_dense_units must be >= 0, conv_filters >= 1")
        if not 0.0 <= self.conv_dropout < 1.0:
            raise ValueError("conv_dropout must be in [0, 1)")
        if self.onset_lstm_units < 0:
            raise ValueError("onset_lstm_units must be >= 0 (0: lstm_units)")
        if self.velocity_units < 1 or self.velocity_lstm_units < 0:
            raise ValueError("velocity_units must be >= 1 and velocity_lstm_units >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, losses and callbacks. Defaults follow the seed (Adam, binary
    cross-entropy). Decision thresholds for validation metrics belong to decoding
    (:class:`pianotx.decoding.DecodingConfig`), not here.

    With an onset head the loss is ``BCE(frames) + onset_loss_weight * wBCE(onsets)``,
    where wBCE weighs the positive cells by ``onset_pos_weight`` and the onset targets are
    widened: a note's onset marks its first ``onset_width`` frames (see
    :func:`pianotx.loader.widen_onsets`). Single-frame targets with plain BCE barely
    fire after short training (onset recall ~0.03). After 150 steps on a 40-score
    rendered corpus (``benchmarks/model_family.py``), onset recall / F1 at threshold 0.5
    were: width 2, weight 5: 0.01 / 0.02; width 3, weight 10: 0.42 / 0.19; width 3,
    weight 20: 0.68 / 0.17; weight 50: ~0.8 / 0.13-0.15. A larger weight trades
    precision for recall (it shifts probabilities up; raise the onset threshold with it).
    """

    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    learning_rate: float = 1.0e-3
    momentum: float = 0.9  # SGD only
    batch_size: int = 8
    epochs: int = 10
    early_stopping_patience: int = 4
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    steps_per_epoch: int = 0  # 0: one pass over the training split
    seed: int = 0
    onset_width: int = 3  # frames marked per onset (1: the onset frame only)
    onset_pos_weight: float = 10.0  # weight of positive onset cells in their BCE
    onset_loss_weight: float = 1.0  # onset loss relative to the frame loss
    velocity_loss_weight: float = 1.0  # velocity loss (squared error at onsets) relative to the frame loss
    # TensorFlow's op determinism: two runs with one seed then train identically, at
    # some cost in speed (some kernels have no deterministic version).
    deterministic: bool = False
    # Fine-tuning: the model a trial starts from instead of random weights ("none": from
    # scratch; "bundled": the model shipped with pianotx; "champion": the registered
    # model's champion, else the bundled one; or a model URI, ``models:/...``,
    # ``runs:/...``, a ``.keras`` export). It brings its architecture and feature config;
    # see :mod:`pianotx.tuning.initial`.
    init_from: str = "none"
    # Which layers a trial trains: "all"; "frames" (the onset head and any conv front-end
    # are frozen: the frame stack learns to use onsets it already trusts); "heads" (only
    # the output Dense layers, ``hidden``, ``frames`` and ``onsets``); "velocity" (only the
    # velocity head: a model's notes stay exactly as they were, and it learns velocities).
    train_layers: str = "all"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError("learning_rate, batch_size and epochs must be positive")
        if self.onset_width < 1 or self.onset_pos_weight <= 0 or self.onset_loss_weight < 0:
            raise ValueError("onset_width must be >= 1, onset_pos_weight > 0, onset_loss_weight >= 0")
        if self.velocity_loss_weight < 0:
            raise ValueError("velocity_loss_weight must be >= 0")
        if self.train_layers not in TRAIN_LAYERS:
            raise ValueError(f"train_layers must be one of {', '.join(TRAIN_LAYERS)}, got {self.train_layers!r}")
        if not isinstance(self.init_from, str) or not self.init_from:
            raise ValueError(f"init_from must be none, bundled, champion or a model URI, got {self.init_from!r}")


@dataclass(frozen=True)
class DistributedConfig:
    """A search across processes or machines (:mod:`pianotx.tuning.distributed`), and
    ``pianotx search-distributed``'s processes on one machine (:mod:`pianotx.tuning.launch`)."""

    port: int = 8000  # the chief's oracle port
    bind: str = "127.0.0.1"  # the address the chief listens on
    worker_timeout: float = 120.0  # seconds without a worker's heartbeat before its trial is retried
    chief_poll: float = 1.0  # seconds between the chief's checks (end of the search, heartbeats)
    workers: int = 2  # search-distributed: workers started (the chief trains nothing)
    mlflow_port: int = 5001  # search-distributed: the MLflow server's port
    threads: int = 0  # search-distributed: TensorFlow threads per worker (0: CPU cores / workers)
    worker_restarts: int = 2  # search-distributed: times a failed worker is started again


@dataclass(frozen=True)
class DecodingConfig:
    """How probabilities become notes (see :func:`decode`).

    Attributes:
        threshold: a key is down in a frame where its frame probability is
            ``>= threshold``.
        onset_threshold: with an onset output, a note starts where the onset probability
            rises to ``>= onset_threshold`` (rising edge: the frame before is below).
        min_duration: notes shorter than this many seconds are dropped (after gap
            bridging). The default 0.05 s drops one-frame notes at 31.25 frames/s
            (32 ms, usually spurious blips) and keeps two-frame notes (64 ms).
        gap_frames: inactive runs of at most this many frames between two active runs
            of the same key are filled (one note instead of two), unless an onset
            re-triggers the key inside the gap or on the frame after it. 0 (default)
            bridges nothing; 1 bridges one-frame dropouts of a sustained note, at the
            cost of merging repeated notes released for a single frame.
        velocity: 0 gives each note its velocity from the model: with a velocity
            output ``clip(round(127 * v), 1, 127)`` where ``v`` is that output at the
            note's first frame, else ``clip(round(127 * m), 1, 127)`` where ``m`` is
            the mean frame probability over the note's frames (bridged gap frames
            included); any other value (1..127) is given to every note.
        latency: seconds every note is moved earlier (its onset and offset; clipped
            at 0): the model's systematic onset lag, measured on the validation pieces
            (the median error of matched onsets) when thresholds are tuned. At most
            0.05 s either way (mir_eval's onset tolerance); negative moves notes later.
        onsetless_min_duration: with an onset output, a run of active frames that no
            onset starts (the onset probability reaches ``onset_threshold`` within one
            frame of the run's start) becomes a note only if it lasts at least this many
            seconds: frame activity without an onset (a harmonic, a resonance) makes no
            note, while a long note whose onset was missed is kept. 0 (default): every
            run starts a note; a very large value is Onsets and Frames' rule (onsets
            start notes, frames only sustain them). Tuned with the thresholds.
        onsetless_threshold: the onset probability that counts, within one frame of a
            run's start, as the onset starting it (for ``onsetless_min_duration``);
            ``None`` (default): ``onset_threshold``. Keeping a run that begins from
            silence needs less evidence than cutting a sounding note in two, so the
            tuned value is usually lower than ``onset_threshold``.
    """

    threshold: float = 0.5
    onset_threshold: float = 0.5
    min_duration: float = 0.05
    gap_frames: int = 0
    velocity: int = 0
    latency: float = 0.0
    onsetless_min_duration: float = 0.0
    onsetless_threshold: float | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.threshold <= 1.0 and 0.0 <= self.onset_threshold <= 1.0):
            raise ValueError("threshold and onset_threshold must be in [0, 1]")
        if self.onsetless_threshold is not None and not 0.0 <= self.onsetless_threshold <= 1.0:
            raise ValueError("onsetless_threshold must be in [0, 1] or None")
        if self.min_duration < 0 or self.gap_frames < 0 or self.onsetless_min_duration < 0:
            raise ValueError("min_duration, onsetless_min_duration and gap_frames must be >= 0")
        if not 0 <= self.velocity <= 127:
            raise ValueError("velocity must be 0 (from activations) or 1..127")
        if not -0.05 <= self.latency <= 0.05:
            raise ValueError("latency must be in [-0.05, 0.05] seconds")


def model_metadata(features: FeatureConfig, decoding: DecodingConfig, context: int, **extra: Any) -> dict[str, Any]:
    """What a saved model carries besides its weights: the feature config it was trained
    on, the decoding config tuned with it, and the context (its training chunk length)
    transcription runs on each side of a window (read back by
    :func:`pianotx.transcribe.from_metadata`)."""
    return {"features": to_dict(features), "decoding": to_dict(decoding), "context_frames": context, **extra}

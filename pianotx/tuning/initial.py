"""Fine-tuning: trials that start from an existing model's weights instead of from nothing.

A search names its initial model with ``init_from`` (a setting of
:class:`~pianotx.config.TrainConfig`: fixed, searched as a ``choice`` next to ``none``
so that fine-tuned and from-scratch trials compete in one search, the space file's
top-level ``init_from:``, or ``pianotx search --init-from URI``). Each name is resolved
once per search (:func:`resolve_initial`) and kept as an export in the search's folder,
so that a resumed search, and every worker of a distributed one, starts from the same
weights even after the registry has moved on:

- ``bundled``: the model shipped with pianotx;
- ``champion``: the registered model's champion (alias ``champion``, else its Production
  version); in a store with none, the bundled model, registered first as a version of
  its own (:func:`pianotx.tuning.champion.ensure_champion`);
- any model URI ``pianotx transcribe --model`` takes (``models:/...``, ``runs:/...``,
  a ``.keras`` export).

The initial model brings its architecture (the ``model`` config it was saved with), its
input standardisation and its feature config: a fine-tuning trial changes only what
fine-tuning needs (:data:`FINE_TUNABLE` model settings, and the training settings:
learning rate, epochs, ``train_layers``). :func:`check_initial` refuses, before
anything trains, a space whose fixed or searched architecture differs from an initial
model's, and a dataset built with other features than it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.config import ConfigError, FeatureConfig, ModelConfig, TrainConfig, from_dict, to_dict
from pianotx.locations import MODEL_NAME, Store
from pianotx.tuning.space import example_values

FROM_SCRATCH = "none"
BUNDLED = "bundled"
CHAMPION = "champion"
# Model settings a fine-tuning trial may set: they change no weight's shape.
FINE_TUNABLE = ("dropout", "recurrent_dropout", "conv_dropout")
# A head a fine-tuning trial may add to a model that has none: its layers start from
# nothing, every other layer from the initial model (e.g. ``velocity_head: true`` with
# ``train_layers: velocity`` teaches a model velocities and leaves its notes as they were).
ADDABLE = ("velocity_head", "velocity_units", "velocity_lstm_units")
ARCHITECTURE = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in FINE_TUNABLE + ADDABLE)
INITIAL_DIR = "initial"  # in the search's Keras Tuner folder: one export per initial model


@dataclass(frozen=True)
class InitialModel:
    """A model trials start from.

    Attributes:
        name: as the search names it (``bundled``, ``champion``, a URI).
        uri: what it resolved to (``models:/NAME/VERSION``, ``runs:/...``, a file).
        model: its architecture.
        features: the features it was trained on.
        input_stats: its input standardisation (per-bin mean and deviation), or ``None``.
        weights: every weight, in ``keras.Model.get_weights`` order.
    """

    name: str
    uri: str
    model: ModelConfig
    features: FeatureConfig
    input_stats: tuple[np.ndarray, np.ndarray] | None
    weights: list[np.ndarray]

    def architecture(self, trial_model: ModelConfig, values: dict[str, Any]) -> ModelConfig:
        """The trial's model: this model's architecture, with the :data:`FINE_TUNABLE`
        settings the trial sets (``values``: its hyperparameter values) and the velocity
        head when the trial asks for one and this model has none (:data:`ADDABLE`)."""
        changes = {k: getattr(trial_model, k) for k in FINE_TUNABLE if k in values}
        if trial_model.velocity_head and not self.model.velocity_head:
            changes |= {k: getattr(trial_model, k) for k in ADDABLE}
        return dataclasses.replace(self.model, **changes)

    def load_into(self, net: Any) -> None:
        """Give ``net`` (built from :meth:`architecture`) this model's weights, layer by
        layer; a head this model lacks keeps its fresh weights."""
        if [tuple(w.shape) for w in net.get_weights()] == [tuple(w.shape) for w in self.weights]:
            net.set_weights(self.weights)
            return
        from pianotx.model import build_model

        source = build_model(self.model, TrainConfig(), self.features.n_bins, input_stats=self.input_stats)
        source.set_weights(self.weights)
        for layer in source.layers:
            if layer.weights:
                net.get_layer(layer.name).set_weights(layer.get_weights())


def init_names(fixed: dict[str, Any], hyperparameters: dict[str, tuple[dict[str, Any], ...]]) -> list[str]:
    """The initial models a search space names (fixed, or among a choice's values), in order."""
    names: list[str] = []
    if "init_from" in fixed:
        names.append(str(fixed["init_from"]))
    for entry in hyperparameters.get("init_from", ()):
        names += [str(v) for v in entry.get("values", [])]
    return [n for n in dict.fromkeys(names) if n != FROM_SCRATCH]


def _folder(project: Path, name: str) -> Path:
    return project / INITIAL_DIR / hashlib.sha256(name.encode()).hexdigest()[:16]


def resolve_initial(name: str, project: Path, store: Store, register_as: str | None) -> InitialModel:
    """The initial model ``name`` of the search whose Keras Tuner folder is ``project``:
    resolved and exported there the first time, read back from there afterwards.

    Raises:
        ConfigError: the model cannot be loaded, or carries no architecture.
    """
    from pianotx.errors import PianotxError
    from pianotx.transcribe import BUNDLED_MODEL, export, load_local, load_transcriber

    folder = _folder(project, name)
    source = folder / "source.json"
    if not source.is_file():
        try:
            uri = _resolved_uri(name, store, register_as)
            transcriber = (
                load_local(BUNDLED_MODEL) if uri == str(BUNDLED_MODEL) else load_transcriber(uri, store.tracking_uri)
            )
        except PianotxError as exc:
            raise ConfigError(f"init_from {name}: {exc}") from exc
        if transcriber.architecture is None:
            raise ConfigError(
                f"init_from {name}: {uri} was saved without its architecture (its model config); "
                "fine-tune a model logged by a pianotx search or exported from one"
            )
        export(transcriber, folder, "piano")
        from pianotx.files import write_json_atomic

        write_json_atomic(source, {"name": name, "uri": uri})
    uri = json.loads(source.read_text())["uri"]
    transcriber = load_local(folder / "piano.keras")
    model = from_dict(ModelConfig, transcriber.architecture, f"init_from {name} ({uri}) architecture")
    initial = InitialModel(
        name, uri, model, transcriber.features, _input_stats(transcriber.model), transcriber.model.get_weights()
    )
    _check_weights(initial)
    return initial


def _resolved_uri(name: str, store: Store, register_as: str | None) -> str:
    from pianotx.transcribe import BUNDLED_MODEL

    if name == BUNDLED:
        return str(BUNDLED_MODEL)
    if name == CHAMPION:
        from pianotx.tuning.champion import ensure_champion

        registered = register_as or MODEL_NAME
        version = ensure_champion(store, registered, register=register_as is not None)
        return f"models:/{registered}/{version}" if version is not None else str(BUNDLED_MODEL)
    return name


def _input_stats(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A loaded model's input standardisation (its ``standardize`` layer), if it has one."""
    try:
        config = model.get_layer("standardize").get_config()
    except ValueError:
        return None
    mean = np.asarray(config["mean"], np.float32).reshape(-1)
    return mean, np.sqrt(np.asarray(config["variance"], np.float32).reshape(-1))


def _check_weights(initial: InitialModel) -> None:
    """Refuse a model whose weights do not fit the architecture it says it has."""
    from pianotx.model import build_model

    net = build_model(initial.model, TrainConfig(), initial.features.n_bins, input_stats=initial.input_stats)
    shapes = [tuple(w.shape) for w in net.get_weights()]
    if shapes != [tuple(w.shape) for w in initial.weights]:
        raise ConfigError(f"init_from {initial.name}: {initial.uri}'s weights do not fit its recorded architecture")


def check_initial(
    where: str,
    initial: InitialModel,
    fixed: dict[str, Any],
    hyperparameters: dict[str, tuple[dict[str, Any], ...]],
    features: FeatureConfig,
    dataset: str,
) -> None:
    """Refuse (one line naming the file and the setting) a space that changes the
    architecture of ``initial``, or a dataset built with other features.

    A searched architecture setting passes only when every value it can take is the
    initial model's, or when it is drawn only for other values of ``init_from`` (e.g.
    ``parent_name: init_from, parent_values: [none]``: searched for trials from scratch).
    """
    mine = to_dict(initial.model)
    for key in ARCHITECTURE:
        if key in fixed and fixed[key] != mine[key]:
            raise ConfigError(
                f"{where}: fixed {key} {fixed[key]!r} differs from the initial model's {mine[key]!r} "
                f"(init_from {initial.name}: {initial.uri}); fine-tuning keeps the architecture"
            )
        for entry in hyperparameters.get(key, ()):
            if entry.get("parent_name") == "init_from" and initial.name not in entry["parent_values"]:
                continue
            if any(v != mine[key] for v in example_values(entry)):
                raise ConfigError(
                    f"{where}: {key} is searched, but a trial starting from {initial.name} ({initial.uri}) keeps "
                    f"its {key} {mine[key]!r}; search it only for trials from scratch "
                    "(parent_name: init_from, parent_values: [none])"
                )
    if features != initial.features:
        raise ConfigError(
            f"{dataset}: built with {_describe(features)}, but the initial model {initial.uri} was trained on "
            f"{_describe(initial.features)}; build the dataset with its features "
            f"(pianotx data build ... --bins-per-octave {initial.features.bins_per_octave} "
            f"--n-bins {initial.features.n_bins})"
        )


def _describe(features: FeatureConfig) -> str:
    return (
        f"{features.n_bins} CQT bins at {features.bins_per_octave} per octave, hop {features.hop_length}, "
        f"{features.sample_rate} Hz"
    )

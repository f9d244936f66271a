"""Search spaces as YAML files: one search per file, Keras Tuner's own names.

Example (every key shown; see ``search_spaces/``)::

    name: quick                      # experiment name in MLflow (default: file stem)
    description: ...                 # free text
    objective: {name: val_f1, direction: max}   # or just `objective: val_f1`
    tuner:
      type: random                   # random | bayesian | hyperband
      max_trials: 6                  # random, bayesian
      seed: 0                        # any integer >= 0: the same seed draws the same trials
      # bayesian: num_initial_points, alpha, beta
      # hyperband: max_epochs, factor, hyperband_iterations (instead of max_trials)
      max_consecutive_failed_trials: 3
    hyperparameters:                 # hp.Int / hp.Float / hp.Choice / hp.Boolean
      lstm_units: {type: int, min_value: 64, max_value: 256, step: 64}
      learning_rate: {type: float, min_value: 1.0e-4, max_value: 1.0e-2, sampling: log}
      optimizer: {type: choice, values: [adam, sgd]}
      momentum: {type: float, min_value: 0.8, max_value: 0.95, parent_name: optimizer, parent_values: [sgd]}
      bidirectional: {type: boolean}
    fixed:                           # hp.Fixed: set, not searched
      recurrent_dropout: 0.0
      epochs: 6
    init_from: champion              # fine-tune: every trial starts from this model
                                     # (none | bundled | champion | a model URI), as
                                     # `fixed: {init_from: ...}`; search it as a choice
                                     # to mix fine-tuned trials with trials from scratch

Fine-tuning (:mod:`pianotx.tuning.initial`): a trial whose ``init_from`` names a model
starts from its weights and keeps its architecture and features; it may change only
dropout and training settings (``learning_rate``, ``epochs``, ``train_layers``, ...).
Architecture settings searched next to it must be conditioned on ``init_from: [none]``.

Sampling: ``choice`` draws each value with equal probability. A stepped ``int`` or
``float`` draws a continuous value and rounds it to the grid, so its two end values get
half the probability of each inner one (64..192 step 64: 1/4, 1/2, 1/4); list the values
as a ``choice`` to draw them evenly. Keras Tuner reads seed 0 as "pick a random seed";
pianotx hands it ``seed + 1``, so every seed, 0 included, is reproducible.

Conditions: an entry with ``parent_name`` and ``parent_values`` is drawn only when that
choice or boolean (searched above it) has one of those values. A name may also be a list
of such entries with different parent values: one range per condition, as Keras Tuner
allows (e.g. ``learning_rate`` on one scale for Adam, another for SGD)::

      learning_rate:
        - {type: float, min_value: 1.0e-3, max_value: 6.0e-3, sampling: log,
           parent_name: optimizer, parent_values: [adam]}
        - {type: float, min_value: 2.0e-2, max_value: 0.2, sampling: log,
           parent_name: optimizer, parent_values: [sgd]}

Every name under ``hyperparameters`` and ``fixed`` must be a field of
:class:`~pianotx.config.ModelConfig` or :class:`~pianotx.config.TrainConfig`; anything
else is an error before anything trains. Unlisted fields keep their defaults (the seed).

Names: ``name`` (or the file's stem) names the search's folder, so it is letters,
digits, ``.``, ``_`` and ``-``, starting with a letter or digit (no ``/``, never ``.``
or ``..``), at most 100 characters.

Objective: ``objective: NAME`` is short for ``{name: NAME}``; the direction defaults to
``min`` for ``loss`` and ``val_loss``, ``max`` for every other objective.

Tuner settings: ``max_trials``, ``max_epochs``, ``hyperband_iterations`` and
``max_consecutive_failed_trials`` are integers of 1 or more, ``factor`` of 2 or more,
``seed`` and ``num_initial_points`` of 0 or more (0 initial points: Keras Tuner's
default, 3 per hyperparameter).

Limits, so that a file cannot exhaust memory or time before anything runs: at most
1 MiB of UTF-8 text; no YAML anchors, aliases or merge keys (``&a``, ``*a``, ``<<``:
a few hundred bytes of them can expand to gigabytes); no key given twice in one
mapping (YAML would keep the last silently); at most 1000 values in a ``choice``, in a
``parent_values`` list, or entries under one name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pianotx.config import ConfigError, ModelConfig, TrainConfig

TOP_KEYS = {"name", "description", "objective", "tuner", "hyperparameters", "fixed", "note_eval_pieces", "init_from"}
TUNER_KEYS = {
    "random": {"max_trials", "seed", "max_consecutive_failed_trials"},
    "bayesian": {"max_trials", "seed", "max_consecutive_failed_trials", "num_initial_points", "alpha", "beta"},
    "hyperband": {"max_epochs", "factor", "hyperband_iterations", "seed", "max_consecutive_failed_trials"},
}
CONDITION = {"parent_name", "parent_values"}  # active only when another hyperparameter has these values
HP_KEYS = {
    "int": ({"min_value", "max_value"}, {"step", "sampling", "default"} | CONDITION),
    "float": ({"min_value", "max_value"}, {"step", "sampling", "default"} | CONDITION),
    "choice": ({"values"}, {"ordered", "default"} | CONDITION),
    "boolean": (set(), {"default"} | CONDITION),
}
EPOCH_OBJECTIVES = ("val_f1", "val_precision", "val_recall", "val_loss", "loss")  # every epoch, from counts
# at the end of each trial, mir_eval on the validation pieces (pianotx.evaluate)
TRIAL_OBJECTIVES = ("val_note_f1", "val_note_with_offset_f1", "val_note_with_velocity_f1", "val_frame_f1")
OBJECTIVES = EPOCH_OBJECTIVES + TRIAL_OBJECTIVES
SETTING_TYPES = {"alpha": float, "beta": float}  # every other tuner setting is an integer
AT_LEAST = {"max_trials": 1, "max_epochs": 1, "hyperband_iterations": 1, "max_consecutive_failed_trials": 1}
AT_LEAST |= {"factor": 2, "seed": 0, "num_initial_points": 0}
MINIMISED = ("loss", "val_loss")  # the objectives whose direction defaults to min
MAX_BYTES = 1 << 20  # a search space is a short text file: 1 MiB at most
MAX_VALUES = 1000  # values of one choice or parent_values list, entries of one name
MAX_DEPTH = 20  # nesting of YAML collections
MAX_NAME = 100
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit"
TUNABLE = {f.name: f.type for f in fields(ModelConfig)} | {f.name: f.type for f in fields(TrainConfig)}


@dataclass(frozen=True)
class SearchSpec:
    """A parsed search-space file."""

    path: Path
    name: str
    objective: str = "val_f1"
    direction: str = "max"
    tuner: str = "random"
    tuner_settings: dict[str, Any] = field(default_factory=dict)
    # each name's entries: one, or one per condition (different parent values)
    hyperparameters: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    note_eval_pieces: int = 0  # validation pieces scored with mir_eval per trial (0: all)


class _Refused(yaml.YAMLError):
    """YAML that a search space may not hold, at a line of the file."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(f"line {mark.line + 1}: {message}" if mark is not None else message)


class SpaceLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a search space never needs: anchors and
    aliases (they let a few bytes expand to gigabytes), merge keys, a key given twice
    in one mapping (YAML keeps the last, silently) and collections nested deeper than
    ``MAX_DEPTH``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, f"YAML aliases (*{event.anchor}) are not allowed; write each value out")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, f"YAML anchors (&{event.anchor}) are not allowed; write each value out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(key_node.start_mark, "YAML merge keys (<<) are not allowed; write each key out")
            key = self.construct_object(key_node, deep=True)
            try:
                if key in lines:
                    raise _Refused(key_node.start_mark, f"key {key!r} is given twice (first on line {lines[key]})")
                lines[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, read within the limits of a search space.

    Raises:
        ConfigError: one line naming the file, and the line of the file where it helps.
    """
    where = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read search space ({exc})") from exc
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{where}: more than {MAX_BYTES} bytes; a search space is a short YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); a search space is a YAML text file"
        ) from None
    try:
        return yaml.load(text, Loader=SpaceLoader)  # a safe loader, stricter still
    except _Refused as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.reader.ReaderError as exc:
        at = f"U+{exc.character:04X} at offset {exc.position}"
        raise ConfigError(f"{where}: not valid YAML: the control character {at} is not allowed") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}: not valid YAML: {at}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None


def _kind(value: Any) -> str:
    """What ``value`` is, in a message's words."""
    kinds = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return "nothing" if value is None else kinds.get(type(value), type(value).__name__)


def _search_name(where: str, given: Any, path: Path) -> str:
    """The search's name: ``name:``, or the file's stem; it names a folder, so it may
    not climb out of the one that holds every search's state."""
    if given is None or given == "":
        name = path.stem
        if not (NAME.fullmatch(name) and len(name) <= MAX_NAME):
            raise ConfigError(
                f"{where}: the file's name {name!r} cannot name the search ({NAME_RULE}, "
                f"at most {MAX_NAME} characters); give it a name: in the file"
            )
        return name
    if not isinstance(given, str):
        raise ConfigError(f"{where}: name must be text, got {given!r} (quote it)")
    if not (NAME.fullmatch(given) and len(given) <= MAX_NAME):
        raise ConfigError(f"{where}: name {given!r} must be {NAME_RULE}, at most {MAX_NAME} characters")
    return given


def _mapping(where: str, key: str, value: Any, expected: str) -> dict[Any, Any]:
    """``value`` under ``key``, which must be a mapping (nothing: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping ({expected}), got {_kind(value)}")
    return value


def _objective(where: str, value: Any) -> tuple[str, str]:
    """The objective's name and direction, from ``{name: ..., direction: ...}`` or a name."""
    if isinstance(value, str):
        value = {"name": value}
    objective = _mapping(where, "objective", value, "name: an objective, direction: max | min; or just the name")
    _check_keys(f"{where}: objective", objective, {"name", "direction"})
    name = objective.get("name", "val_f1")
    direction = objective.get("direction", "min" if name in MINIMISED else "max")
    if direction not in ("max", "min"):
        raise ConfigError(f"{where}: objective.direction must be max or min")
    if name not in OBJECTIVES:
        raise ConfigError(f"{where}: objective.name must be one of {', '.join(OBJECTIVES)}")
    return name, direction


def _tuner_settings(where: str, tuner: dict[Any, Any]) -> dict[str, Any]:
    """The tuner's settings, each of its type and at least its least value."""
    settings = {}
    for key, value in tuner.items():
        wanted = SETTING_TYPES.get(key, int)
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not number or (wanted is int and value != int(value)):
            raise ConfigError(
                f"{where}: tuner.{key} must be {'a number' if wanted is float else 'an integer'}, got {value!r}"
            )
        least = AT_LEAST.get(key)
        if least is not None and value < least:
            rule = {0: "0 or more", 1: "a positive integer"}.get(least, f"an integer of {least} or more")
            raise ConfigError(f"{where}: tuner.{key} must be {rule}, got {value!r}")
        settings[key] = int(value) if wanted is int else value
    return settings


def _check_keys(
    where: str, got: dict[str, Any], allowed: AbstractSet[str], required: AbstractSet[str] = frozenset()
) -> None:
    unknown = sorted(str(k) for k in set(got) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
        )
    missing = sorted(str(k) for k in required - set(got))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _check_hp(where: str, name: str, entry: Any) -> dict[str, Any]:
    if name not in TUNABLE:
        raise ConfigError(f"{where}: {name!r} is not a model or training setting; known: {', '.join(TUNABLE)}")
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or entry["type"] not in HP_KEYS:
        raise ConfigError(f"{where}: {name} needs type: one of {', '.join(HP_KEYS)}")
    required, optional = HP_KEYS[entry["type"]]
    _check_keys(f"{where}: {name}", entry, required | optional | {"type"}, required)
    for key in ("min_value", "max_value", "step"):
        value = entry.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {name}.{key} must be a number, got {value!r} (write 1.0e-4, not 1e-4)")
    if entry["type"] == "choice" and not (isinstance(entry["values"], list) and entry["values"]):
        raise ConfigError(f"{where}: {name}.values must be a non-empty list")
    for key in ("values", "parent_values"):
        if isinstance(entry.get(key), list) and len(entry[key]) > MAX_VALUES:
            raise ConfigError(f"{where}: {name}.{key} has {len(entry[key])} values; at most {MAX_VALUES}")
    if entry.get("sampling", "linear") not in ("linear", "log", "reverse_log"):
        raise ConfigError(f"{where}: {name}.sampling must be linear, log or reverse_log")
    _check_range(where, name, entry)
    if ("parent_name" in entry) != ("parent_values" in entry) or not isinstance(entry.get("parent_values", []), list):
        raise ConfigError(f"{where}: {name} needs parent_name and parent_values (a list) together")
    if not isinstance(entry.get("parent_name", ""), str):
        raise ConfigError(f"{where}: {name}.parent_name must name a choice or boolean, got {entry['parent_name']!r}")
    return dict(entry)


def _check_range(where: str, name: str, entry: dict[str, Any]) -> None:
    """Refuse ranges Keras Tuner would only refuse once the search has begun."""
    if entry["type"] == "choice":
        values = entry["values"]
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: {name}.values repeats a value")
        if len({type(v) for v in values}) != 1:
            raise ConfigError(f"{where}: {name}.values mixes types ({', '.join(repr(v) for v in values)})")
        return
    if entry["type"] == "boolean":
        return
    low, high = entry["min_value"], entry["max_value"]
    if low > high:
        raise ConfigError(f"{where}: {name}.min_value {low} is above max_value {high}")
    if "step" in entry and entry["step"] <= 0:
        raise ConfigError(f"{where}: {name}.step must be positive, got {entry['step']}")
    if entry.get("sampling", "linear") != "linear" and low <= 0:
        raise ConfigError(f"{where}: {name} with {entry['sampling']} sampling needs min_value > 0, got {low}")
    if entry["type"] == "int" and any(isinstance(entry.get(k), float) for k in ("min_value", "max_value", "step")):
        raise ConfigError(f"{where}: {name} is an int: min_value, max_value and step must be integers")


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a search-space file.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    where = str(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a search space is a mapping of {', '.join(sorted(TOP_KEYS))}")
    _check_keys(where, data, TOP_KEYS, {"tuner"})
    search_name = _search_name(where, data.get("name"), path)
    objective, direction = _objective(where, data.get("objective"))
    tuner = dict(_mapping(where, "tuner", data["tuner"], f"type: {' | '.join(TUNER_KEYS)}, and its settings"))
    kind = tuner.pop("type", None)
    if not isinstance(kind, str) or kind not in TUNER_KEYS:
        raise ConfigError(f"{where}: tuner.type must be one of {', '.join(TUNER_KEYS)}")
    _check_keys(f"{where}: tuner ({kind})", tuner, TUNER_KEYS[kind])
    tuner = _tuner_settings(where, tuner)
    searched = _mapping(where, "hyperparameters", data.get("hyperparameters"), "setting names to entries")
    hps = {k: _check_entries(f"{where}: hyperparameters", k, v) for k, v in searched.items()}
    fixed = dict(_mapping(where, "fixed", data.get("fixed"), "setting names to values"))
    if "init_from" in data:  # the model every trial starts from: as `fixed: {init_from: ...}`
        if "init_from" in fixed or "init_from" in hps:
            raise ConfigError(f"{where}: init_from is given at the top and under fixed or hyperparameters")
        fixed["init_from"] = data["init_from"]
    for name in fixed:
        if name not in TUNABLE:
            raise ConfigError(
                f"{where}: fixed: {name!r} is not a model or training setting; known: {', '.join(TUNABLE)}"
            )
    for name, entries in hps.items():
        for entry in entries:
            _check_parent(where, name, entry, hps)
    both = sorted(set(hps) & set(fixed))
    if both:
        raise ConfigError(f"{where}: {', '.join(both)} both searched and fixed")
    if kind == "hyperband" and "epochs" in set(hps) | set(fixed):
        raise ConfigError(f"{where}: with hyperband the epoch budget is tuner.max_epochs, not epochs")
    spec = SearchSpec(
        path=path,
        name=search_name,
        objective=objective,
        direction=direction,
        tuner=kind,
        tuner_settings=tuner,
        hyperparameters=hps,
        fixed=fixed,
        description=str(data.get("description", "")),
        note_eval_pieces=_note_eval_pieces(where, data.get("note_eval_pieces", 0)),
    )
    base = spec.fixed | {k: example_values(v[0])[0] for k, v in hps.items()}
    configs_from_values(base, where)
    for name, entries in hps.items():  # each end of every range must suit the config
        for value in (v for entry in entries for v in example_values(entry)):
            configs_from_values(base | {name: value}, where)
    return spec


def _note_eval_pieces(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: note_eval_pieces must be an integer >= 0 (0: all), got {value!r}")
    return value


def _check_entries(where: str, name: str, value: Any) -> tuple[dict[str, Any], ...]:
    """One entry, or a list of entries of one name, each under its own condition."""
    if not isinstance(value, list):
        return (_check_hp(where, name, value),)
    if len(value) > MAX_VALUES:
        raise ConfigError(f"{where}: {name} has {len(value)} entries; at most {MAX_VALUES}")
    entries = tuple(_check_hp(where, name, v) for v in value)
    if not entries or any("parent_name" not in e for e in entries):
        raise ConfigError(f"{where}: {name} is a list: each of its entries needs parent_name and parent_values")
    if len({e["parent_name"] for e in entries}) != 1:
        raise ConfigError(f"{where}: {name}'s entries must all depend on one parent")
    seen = [repr(v) for e in entries for v in e["parent_values"]]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{where}: {name}'s entries overlap: a parent value may select only one of them")
    return entries


def _check_parent(where: str, name: str, entry: dict[str, Any], hps: dict[str, tuple[dict[str, Any], ...]]) -> None:
    if "parent_name" not in entry:
        return
    parents = hps.get(entry["parent_name"], ())
    if len(parents) != 1 or parents[0]["type"] not in ("choice", "boolean"):
        raise ConfigError(f"{where}: {name}.parent_name must name a choice or boolean searched before it")
    allowed = parents[0].get("values", [True, False])
    if any(v not in allowed for v in entry["parent_values"]):
        raise ConfigError(f"{where}: {name}.parent_values must be among {entry['parent_name']}'s values {allowed}")


def example_values(entry: dict[str, Any]) -> list[Any]:
    """Values at the edges of an entry's range (the config checks each)."""
    if entry["type"] == "choice":
        return list(entry["values"])
    if entry["type"] == "boolean":
        return [False, True]
    return [entry["min_value"], entry["max_value"]]


def configs_from_values(values: dict[str, Any], where: str = "hyperparameters") -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs from hyperparameter values (``tuner/...`` keys ignored).

    Raises:
        ConfigError: a value the config refuses (wrong type, out of range).
    """
    from pianotx.config import from_dict

    own = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    model_keys = {f.name for f in fields(ModelConfig)}
    model = from_dict(ModelConfig, {k: v for k, v in own.items() if k in model_keys}, where)
    train = from_dict(TrainConfig, {k: v for k, v in own.items() if k not in model_keys}, where)
    return model, train


def to_hyperparameters(spec: SearchSpec) -> Any:
    """The spec as a ``keras_tuner.HyperParameters`` declaring the whole space up front."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in spec.fixed.items():
        hp.Fixed(name, value)
    kinds = {"int": hp.Int, "float": hp.Float, "choice": hp.Choice, "boolean": hp.Boolean}
    for name, entries in spec.hyperparameters.items():
        for entry in entries:
            kinds[entry["type"]](name, **{k: v for k, v in entry.items() if k != "type"})
    return hp

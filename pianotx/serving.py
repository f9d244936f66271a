"""The registered model as MLflow serves it: audio in, notes out.

Every model pianotx logs (a search's trials, the bundled model) is an MLflow
``python_function`` model whose Python class is :class:`PianoModel`. It carries:

- the Keras model and its pianotx metadata (feature and decoding config, context
  length, architecture) as the artifact ``transcriber``: ``piano.keras`` beside
  ``piano.json``, the layout of ``pianotx export``;
- the pianotx package itself (MLflow's ``code_paths``), so that a Python with MLflow,
  TensorFlow and pianotx's other requirements but without pianotx installed can load
  it: ``mlflow.pyfunc.load_model(URI)`` and ``mlflow models serve -m URI`` work as for
  any MLflow model.

Input: a table with one row per clip and one of two columns set in each row,

- ``audio``: the path of an audio file (WAV, FLAC, OGG or MP3) on the machine that
  runs the model;
- ``audio_bytes``: the file's contents (MLflow's ``binary`` type: bytes, or their
  base64 text, which is how JSON requests to ``mlflow models serve`` carry bytes).

Output: one row per note, columns ``input`` (the row of the input it was heard in),
``onset`` and ``offset`` (seconds), ``pitch`` (MIDI number) and ``velocity`` (1..127),
sorted by input, then onset, then pitch. The notes are those ``pianotx transcribe``
writes for the same file with the same model.

The Keras model stays at hand: ``mlflow.pyfunc.load_model(URI).unwrap_python_model()
.transcriber`` is the :class:`~pianotx.transcribe.Transcriber` (its ``model`` the Keras
model), and :func:`pianotx.tracking.load_model` loads the Keras model and metadata
without the serving layer.

This module imports neither TensorFlow nor MLflow's model flavors at import time (its
base class comes from :mod:`pianotx.tracking`, the module that talks to MLflow).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pianotx.errors import PianotxError
from pianotx.tracking import PythonModel, bad_request

ARTIFACT = "transcriber"  # the artifact holding piano.keras and piano.json
MODEL_FILE = "piano.keras"
METADATA_FILE = "piano.json"
# Input columns and their MLflow types; each row sets exactly one of them.
INPUT_COLUMNS = {"audio": "string", "audio_bytes": "binary"}
# Output columns and their MLflow types, in order.
NOTE_COLUMNS = {"input": "long", "onset": "double", "offset": "double", "pitch": "long", "velocity": "long"}
# The suffix a file of each format is read with, found from its first bytes.
SIGNATURES = ((b"RIFF", ".wav"), (b"RIFX", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"))


class ServingError(PianotxError, ValueError):
    """A request the model cannot answer (the message names the row and the reason)."""


def save_transcriber(model: Any, metadata: dict[str, Any], folder: Path) -> Path:
    """Write the artifact :class:`PianoModel` loads: ``piano.keras`` (``model`` without
    its optimizer state) and ``piano.json`` (``metadata`` as given) into ``folder``,
    created; the folder."""
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    plain = keras.models.clone_model(model)  # uncompiled: inference needs no optimizer slots
    plain.set_weights(model.get_weights())
    plain.save(folder / MODEL_FILE)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return folder


def audio_suffix(data: bytes) -> str | None:
    """The file suffix of audio ``data`` from its first bytes (``None``: none known)."""
    for magic, suffix in SIGNATURES:
        if data.startswith(magic):
            return suffix
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:  # an MPEG audio frame header
        return ".mp3"
    return None


def audio_data(value: Any, row: int) -> tuple[bytes, str]:
    """The bytes of an ``audio_bytes`` cell and their suffix: bytes as they are, or
    base64 text (as ``str``, or as the bytes of that text, which MLflow passes on for
    requests in the ``inputs`` format) decoded.

    Raises:
        ServingError: the cell is neither audio data nor base64 text of audio data.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        suffix = audio_suffix(data)
        if suffix is not None:
            return data, suffix
    elif isinstance(value, str):
        data = value.encode("ascii", "ignore")
    else:
        raise ServingError(f"row {row}: audio_bytes must be bytes or base64 text, got {type(value).__name__}")
    try:
        decoded = base64.b64decode(data)
    except (binascii.Error, ValueError):
        decoded = b""
    suffix = audio_suffix(decoded)
    if suffix is None:
        raise ServingError(f"row {row}: audio_bytes is not WAV, FLAC, OGG or MP3 data (nor base64 text of it)")
    return decoded, suffix


def _given(value: Any) -> bool:
    """Whether a cell holds a value (not missing: None, NaN, pandas' NA)."""
    if value is None or value is pd.NA:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def rows(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    """Each input row as ``("audio", path)`` or ``("audio_bytes", data)``.

    Raises:
        ServingError: the table has neither column, or a row sets both or neither.
    """
    columns = [c for c in INPUT_COLUMNS if c in frame.columns]
    if not columns:
        raise ServingError(
            f"the input needs a column audio (file paths) or audio_bytes (file contents); got {list(frame.columns)}"
        )
    out = []
    for row, values in enumerate(frame[columns].itertuples(index=False, name=None)):
        given = [(c, v) for c, v in zip(columns, values) if _given(v)]
        if len(given) != 1:
            raise ServingError(f"row {row}: give exactly one of audio and audio_bytes")
        out.append(given[0])
    return out


def notes_table(notes: list[Any]) -> pd.DataFrame:
    """The output table of :data:`NOTE_COLUMNS` from each input row's
    :class:`~pianotx.midi.Notes` (in input order)."""
    intervals = np.concatenate([np.zeros((0, 2)), *(n.intervals for n in notes)])
    return pd.DataFrame(
        {
            "input": np.repeat(np.arange(len(notes), dtype=np.int64), [len(n) for n in notes]),
            "onset": intervals[:, 0].astype(np.float64),
            "offset": intervals[:, 1].astype(np.float64),
            "pitch": np.concatenate([np.zeros(0, np.int64), *(n.pitches for n in notes)]).astype(np.int64),
            "velocity": np.concatenate([np.zeros(0, np.int64), *(n.velocities for n in notes)]).astype(np.int64),
        },
        columns=list(NOTE_COLUMNS),
    )


class PianoModel(PythonModel):
    """MLflow's ``python_function`` model of a pianotx transcriber (see the module
    docstring for its input and output).

    Attributes:
        transcriber: the loaded :class:`~pianotx.transcribe.Transcriber` (after
            ``load_context``): the Keras model with its feature and decoding config.
    """

    transcriber: Any = None

    def load_context(self, context: Any) -> None:
        """Load the Keras model and its metadata from the artifact ``transcriber``
        (importing :mod:`pianotx.model` first, which registers pianotx's layers with
        Keras)."""
        import pianotx.model  # noqa: F401 - registers pianotx's layers and losses for loading
        from pianotx.transcribe import load_local

        self.transcriber = load_local(Path(context.artifacts[ARTIFACT]) / MODEL_FILE)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Notes of each input row (see the module docstring).

        Raises:
            MlflowException: (``INVALID_PARAMETER_VALUE``, HTTP 400 when served) a row
                without audio, with data that is not audio, or whose audio cannot be
                read; the message names the row and the reason.
        """
        try:
            return notes_table(self._notes(model_input))
        except ServingError as exc:
            raise bad_request(str(exc)) from exc

    def _notes(self, model_input: pd.DataFrame) -> list[Any]:
        """Each input row's :class:`~pianotx.midi.Notes`.

        Raises:
            ServingError: as :meth:`predict` says.
        """
        from pianotx.audio import AudioError
        from pianotx.features import file_features

        if self.transcriber is None:
            raise ServingError("the model is not loaded (load it with mlflow.pyfunc.load_model)")
        notes = []
        with tempfile.TemporaryDirectory(prefix="pianotx-serving-") as tmp:
            for row, (column, value) in enumerate(rows(model_input)):
                if column == "audio":
                    path, label = Path(str(value)), str(value)
                else:
                    data, suffix = audio_data(value, row)
                    path, label = Path(tmp) / f"input{row}{suffix}", f"audio_bytes ({suffix[1:]})"
                    path.write_bytes(data)
                try:
                    features, _ = file_features(path, self.transcriber.features)
                except AudioError as exc:
                    raise ServingError(f"row {row}: {label}: {exc}") from exc
                notes.append(self.transcriber.notes(features))
        return notes

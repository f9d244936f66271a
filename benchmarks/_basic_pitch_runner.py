"""Basic Pitch over a batch of audio files, its model loaded once (runs in Basic Pitch's venv).

Imports only basic_pitch and the standard library, so it runs in a venv holding
``basic-pitch`` alone (``versus_basic_pitch.py`` creates the venv and starts this).

    python _basic_pitch_runner.py OUT.json WARMUP.wav < audio-paths (one per line)

Before the files, one prediction on ``WARMUP.wav`` (a short silence) pays graph
tracing and first-use costs, so that the first real file is timed like the others.
``OUT.json``::

    {"version": "0.4.0", "backend": "TENSORFLOW",
     "files": [{"audio": str, "seconds": float,
                "notes": [[start_s, end_s, midi_pitch, amplitude], ...], "error": str}]}

``seconds`` is one file's processing time (audio loading, network, note creation).
A file that fails gets its one-line ``error`` and no notes; the batch goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from importlib.metadata import version
from typing import Any


def load_model() -> Any:
    """Basic Pitch's ICASSP 2022 model on the first backend that loads (TensorFlow first)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.disable(logging.WARNING)  # basic_pitch warns about every runtime it lacks
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model

    return Model(ICASSP_2022_MODEL_PATH)


def transcribe(model: Any, audio: str) -> dict[str, Any]:
    """One file's note events (Basic Pitch's default thresholds) and its timing."""
    from basic_pitch.inference import predict

    start = time.perf_counter()
    try:
        _, _, events = predict(audio, model)
    except Exception as exc:  # one bad file must not stop the batch
        return {"audio": audio, "seconds": 0.0, "notes": [], "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.perf_counter() - start
    notes = [[float(s), float(e), int(p), float(a)] for s, e, p, a, _ in events]
    return {"audio": audio, "seconds": seconds, "notes": notes, "error": ""}


def main() -> None:
    out_path, warmup = sys.argv[1], sys.argv[2]
    audio = [line.strip() for line in sys.stdin if line.strip()]
    model = load_model()
    transcribe(model, warmup)
    result = {
        "version": version("basic-pitch"),
        "backend": model.model_type.name,
        "files": [transcribe(model, path) for path in audio],
    }
    tmp = out_path + ".part"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main()

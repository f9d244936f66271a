"""Basic Pitch over a batch of audio files, its model loaded once (runs in Basic Pitch's venv).

Imports only basic_pitch, numpy and the standard library, so it runs in a venv holding
``basic-pitch`` alone (see ``versus_basic_pitch.py``, which starts it).

    python _basic_pitch_runner.py OUT.json WARMUP.wav < audio-paths (one per line)

Start-up (imports, model load, then one prediction on ``WARMUP.wav`` so that graph
tracing and first-use compilation are not charged to the first real file) is timed
apart from the files. ``OUT.json``::

    {"version": "0.4.0", "backend": "TENSORFLOW", "startup_seconds": float,
     "files": [{"audio": str, "seconds": float,
                "notes": [[start_s, end_s, midi_pitch, amplitude], ...], "error": str}]}

A file that fails gets its one-line ``error`` and no notes; the batch goes on.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402


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
        with open(os.devnull, "w") as quiet:  # predict prints a line per file
            stdout, sys.stdout = sys.stdout, quiet
            try:
                _, _, events = predict(audio, model)
            finally:
                sys.stdout = stdout
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
    startup = time.perf_counter() - STARTED
    files = [transcribe(model, path) for path in audio]
    result = {
        "version": version("basic-pitch"),
        "backend": model.model_type.name,
        "startup_seconds": startup,
        "files": files,
    }
    tmp = out_path + ".part"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main()

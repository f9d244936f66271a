"""Keras imported for the command line: quietly, without its optional packages, its objects
left out of garbage collection."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_keras_works_without_its_optional_packages_which_import_as_usual_afterwards():
    lines = run(
        "import sys, numpy as np; from pianotx.quiet import import_keras_quietly; import_keras_quietly(); "
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'pandas') if m in sys.modules)); "
        "import keras; from pianotx.transcribe import BUNDLED_MODEL, load_local; "
        "m = load_local(BUNDLED_MODEL); "
        "out = m.model.predict_on_batch(np.zeros((1, 5, m.features.n_bins), np.float32)); "
        "print(keras.tree.flatten(out)[0].shape); "
        "import pandas, matplotlib.pyplot; print(pandas.__name__, matplotlib.pyplot.__name__)"
    )
    assert lines == ["[]", "(1, 5, 88)", "pandas matplotlib.pyplot"]


def test_a_package_imported_before_keras_is_left_alone():
    lines = run(
        "import pandas; from pianotx.quiet import import_keras_quietly; import_keras_quietly(); "
        "from keras.src.trainers.data_adapters import array_slicing; print(array_slicing.pandas is pandas)"
    )
    assert lines == ["True"]


def test_keras_objects_are_frozen_out_of_garbage_collection():
    lines = run(
        "import gc; from pianotx.quiet import import_keras_quietly; import_keras_quietly(); "
        "print(gc.get_freeze_count() > 100_000)"
    )
    assert lines == ["True"]

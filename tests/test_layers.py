"""The layers point one way: each rule names what a module may not import (at any
depth, imports inside functions included), read from the source with ``ast``."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pianotx"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as dotted names (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules() -> dict[str, set[str]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("pianotx", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = _imports(path)
    return out


MODULES = _modules()


def _users(prefix: str) -> set[str]:
    """Modules importing ``prefix`` or anything under it."""
    return {m for m, imports in MODULES.items() if any(i == prefix or i.startswith(prefix + ".") for i in imports)}


def test_the_rules_see_imports_inside_functions():
    # transcribe imports MLflow's side only inside functions: the rules must see that
    assert "pianotx.tracking" in MODULES["pianotx.transcribe"]


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        ("pianotx.cli", {"pianotx.__main__"}),  # no stage imports the CLI
        ("mlflow", {"pianotx.tracking", "pianotx.serving"}),  # the only MLflow importers
        ("keras_tuner", {m for m in MODULES if m.startswith("pianotx.tuning")}),
        ("keras_tuner.src", {"pianotx.tuning.private"}),  # private Keras Tuner: one module, pinned by a test
    ],
)
def test_only_the_named_modules_import(prefix, allowed):
    assert _users(prefix) <= allowed, sorted(_users(prefix) - allowed)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("pianotx.transcribe", "pianotx.evaluate"),  # transcription does not import scoring
        ("pianotx.transcribe", "pianotx.plots"),
        ("pianotx.train", "pianotx.transcribe"),  # training does not import model loading
        ("pianotx.train", "pianotx.decoding"),
        ("pianotx.train", "pianotx.tracking"),  # train.py: no tuner, no MLflow
        ("pianotx.train", "keras_tuner"),
        ("pianotx.model", "pianotx.train"),
    ],
)
def test_a_layer_does_not_import(module, forbidden):
    bad = {i for i in MODULES[module] if i == forbidden or i.startswith(forbidden + ".")}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_sources_never_import_the_renderer():
    sources = {m for m in MODULES if m.startswith("pianotx.datasets")}
    assert sources and not {m for m in sources if any(i.startswith("pianotx.render") for i in MODULES[m])}

"""mlflow is imported only by pianotx/tracking.py, keras_tuner only inside pianotx/tuning/,
and the CLI's --help imports neither TensorFlow nor librosa."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pianotx"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_tracking_imports_mlflow_and_only_tuning_imports_keras_tuner():
    mlflow_users, tuner_users = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        found = _imports(path)
        if "mlflow" in found:
            mlflow_users.append(rel)
        if "keras_tuner" in found:
            tuner_users.append(rel)
    assert mlflow_users == ["tracking.py"]
    assert tuner_users and all(p.startswith("tuning/") for p in tuner_users)


def test_cli_help_imports_no_heavy_module():
    code = (
        "import sys; from typer.testing import CliRunner; from pianotx.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'librosa', 'mlflow', 'keras_tuner') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

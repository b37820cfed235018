"""The package's layer contract (`[tool.importlinter]` in pyproject.toml): it holds on the code as
it is, and it catches each kind of import it forbids, checked on a copy of the package with one
bad import added."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the package under `root` (its pyproject.toml names the contracts)."""
    assert LINT is not None
    return subprocess.run(
        [LINT], cwd=root, env={"PYTHONPATH": str(root)}, capture_output=True, text=True
    )


def test_the_package_keeps_its_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, bad_import, broken",
    [
        ("jobs/embed.py", "from drawmatch.jobs import train", "Jobs never import jobs"),
        ("core/locks.py", "from drawmatch.data import catalogue", "Layers"),
        ("retrieval/metrics.py", "from drawmatch.jobs import evaluate", "Layers"),
        ("reporting/plots.py", "from drawmatch.training import losses", "Layers"),
        ("serve/views.py", "from drawmatch.jobs import search", "Layers"),
        ("data/pairs.py", "import drawmatch.cli", "Layers"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, bad_import, broken):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(
        ROOT / "drawmatch", tmp_path / "drawmatch", ignore=shutil.ignore_patterns("demo_data")
    )
    path = tmp_path / "drawmatch" / module
    path.write_text(path.read_text() + f"\n{bad_import}  # noqa: E402, F401\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
    assert module.replace("/", ".").removesuffix(".py") in result.stdout

"""The notebooks run top to bottom on the demo's output (code cells executed in order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_notebook_runs_on_demo_output(notebook, demo_out):
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict[str, object] = {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = source.replace('Path("../drawmatch-demo")', f"Path({str(demo_out)!r})")
        exec(compile(source, f"{notebook.name}", "exec"), namespace)  # noqa: S102
    assert len(namespace["topk"]) > 0  # type: ignore[arg-type]

"""Every notebook executes top to bottom in a Jupyter kernel (nbclient) on the demo's output."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def execute_notebook(notebook: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Run a notebook in a fresh python3 kernel with DRAWMATCH_OUT=out; returns the executed
    notebook (nbclient raises CellExecutionError, with the cell and traceback, on any error)."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("DRAWMATCH_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    return client.execute()


def outputs_of(nb: object) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_notebook_runs_on_demo_output(notebook, demo_out, monkeypatch):
    executed = execute_notebook(notebook, demo_out, monkeypatch)
    outputs = outputs_of(executed)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert outputs, f"{notebook.name} shows nothing"


def test_notebooks_are_thin_layers_over_the_library():
    """Notebooks use the library and never define functions or classes of their own."""
    import nbformat

    for notebook in NOTEBOOKS:
        nb = nbformat.read(notebook, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                for line in cell.source.splitlines():
                    assert not line.lstrip().startswith(("def ", "class ")), (notebook.name, line)
                assert not cell.outputs, f"{notebook.name}: commit notebooks without outputs"

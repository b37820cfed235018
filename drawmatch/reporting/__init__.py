"""What people read: collection insights, results tables gathered from runs, plots and
contact sheets, shared by the report job, the demo and the workbench."""

from importlib import resources


def shared_css() -> str:
    """The stylesheet the report and the workbench share (colours, type, tables, tiles): the
    report inlines it, the workbench serves it as `/shared.css`."""
    return (resources.files(__name__) / "templates" / "shared.css").read_text(encoding="utf-8")

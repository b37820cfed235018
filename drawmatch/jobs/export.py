"""The export job: the workbench's annotated pairs as a pairs CSV for `split` and `train`.

Reads `annotations.sqlite` under the output root and writes the pairs whose latest decision is
`match` (`drawing_id, artwork_id, keep, parent_id`; default `out/annotations/pairs.csv`). Versos
and ids the catalogue no longer holds are never exported.
"""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.annotations import AnnotationStore, db_path, pairs_csv_text, pairs_frame


@dataclass(frozen=True)
class ExportConfig(Config):
    """Annotated pairs out of the workbench's `annotations.sqlite`: the pairs whose latest
    decision is `match`, in the pairs CSV contract that `split` and `train` read."""

    out: str = setting("drawmatch-out", help="output root")
    output: str | None = setting(None, help="pairs file written (null: under out)")
    annotators: tuple[str, ...] = setting(
        (), may_be_empty=True, help="annotators kept (empty: all)"
    )


@dataclass
class ExportResult:
    path: str
    pairs: int


def run(config: ExportConfig) -> ExportResult:
    catalogue = cat.read_catalogue(config.out)
    source = db_path(config.out)
    if not storage.exists(source):
        raise FileNotFoundError(f"no annotations at {source}: annotate with `drawmatch serve`")
    allowed = set(catalogue.loc[cat.usable(catalogue), "id"])
    table = pairs_frame(AnnotationStore(source), allowed, config.annotators)
    target = config.output or storage.join(config.out, "annotations", "pairs.csv")
    storage.write_text(target, pairs_csv_text(table))
    save_config(config, storage.join(storage.parent(target), "export_config.yaml"))
    print(f"export: {len(table)} annotated pairs written to {target}")
    return ExportResult(path=str(target), pairs=len(table))

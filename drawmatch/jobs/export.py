"""The export job: the experts' decisions as the files `split` and `train` read.

Reads `annotations.sqlite` under the output root, where the workbench keeps every decision and
the known pairs imported from pairs files (`serve pairs_csv=`, or `pairs_csv=` here: imported
the same way, once). The current decision of each pair is its latest one, so a pair imported as
known and rejected in the workbench is a non-match. Writes, in one folder (default
`out/annotations/`):

- `pairs.csv`: the current matches (`drawing_id, artwork_id, keep, parent_id`), imported and
  decided alike;
- `negatives.csv`: the current non-matches, the experts' confirmed hard negatives
  (`drawing_id, artwork_id, annotator, decided_at, source, model, rank, distance`).

Versos and ids the catalogue no longer holds are never exported. The summary counts the imported
pairs kept, the matches decided in the workbench, the non-matches, the imported pairs rejected in
the workbench, the skipped pairs, the pairs left out, and the double-review disagreements not
settled yet (settle them on the workbench's agreement page).
"""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.annotations import (
    AnnotationStore,
    ExportCounts,
    db_path,
    export_counts,
    negatives_frame,
    pairs_csv_text,
    pairs_frame,
    read_known_pairs,
)
from drawmatch.serve import double_review

NEGATIVES_FILE = "negatives.csv"


@dataclass(frozen=True)
class ExportConfig(Config):
    """The experts' decisions out of the workbench's `annotations.sqlite`: the pairs whose
    current decision is `match` (imported known pairs included) in the pairs CSV contract that
    `split` and `train` read, and the non-matches in `negatives.csv` beside it."""

    out: str = setting("drawmatch-out", help="output root")
    output: str | None = setting(
        None, help="pairs file written; negatives.csv beside it (null: out/annotations/pairs.csv)"
    )
    annotators: tuple[str, ...] = setting(
        (), may_be_empty=True, help="annotators kept (empty: all; imported pairs always kept)"
    )
    pairs_csv: tuple[str, ...] = setting(
        (), may_be_empty=True, help="known pairs files imported first (as `serve pairs_csv=`)"
    )


@dataclass
class ExportResult:
    path: str
    pairs: int
    negatives_path: str
    negatives: int
    counts: ExportCounts
    open_disagreements: int  # double-review disagreements not settled: the latest decision counts


def run(config: ExportConfig) -> ExportResult:
    catalogue = cat.read_catalogue(config.out)
    known = read_known_pairs(config.pairs_csv, catalogue) if config.pairs_csv else []
    source = db_path(config.out)
    if not storage.exists(source) and not known:
        raise FileNotFoundError(f"no annotations at {source}: annotate with `drawmatch serve`")
    store = AnnotationStore(source)
    for name, pairs in known:
        added, seen, decided = store.import_pairs(name, pairs)
        print(f"export: {name}: {added} known pairs imported ({seen} before, {decided} decided)")
    allowed = set(catalogue.loc[cat.usable(catalogue), "id"])
    table = pairs_frame(store, allowed, config.annotators)
    negatives = negatives_frame(store, allowed, config.annotators)
    counts = export_counts(store, allowed, config.annotators)
    unsettled = len(double_review.agreement(store.effective()).open)
    target = config.output or storage.join(config.out, "annotations", "pairs.csv")
    folder = storage.parent(target)
    negatives_target = storage.join(folder, NEGATIVES_FILE)
    storage.write_text(target, pairs_csv_text(table))
    storage.write_text(negatives_target, pairs_csv_text(negatives))
    save_config(config, storage.join(folder, "export_config.yaml"))
    print(summary(counts, target, negatives_target, unsettled))
    return ExportResult(
        str(target), len(table), str(negatives_target), len(negatives), counts, unsettled
    )


def summary(counts: ExportCounts, pairs_path: str, negatives_path: str, unsettled: int) -> str:
    """What the export wrote, count by count."""
    c = counts
    lines = [
        f"export: {c.imported_kept + c.decided_matches} pairs written to {pairs_path}",
        f"  imported pairs kept: {c.imported_kept}",
        f"  matches decided in the workbench: {c.decided_matches}",
        f"export: {c.non_matches} non-matches written to {negatives_path}",
        f"  imported pairs rejected in the workbench (exported as non-matches): "
        f"{c.rejected_imports}",
        f"  skipped (in neither file): {c.skipped}",
        f"  left out (versos, ids no longer catalogued): {c.left_out}",
        f"double-review disagreements not settled (their latest decision exported): {unsettled}",
    ]
    return "\n".join(lines)

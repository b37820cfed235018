"""The split job: artwork-disjoint train/val/test folds (thesis sec. 5.1.1).

Drawings and artworks are the two node sets of a bipartite graph whose edges are the original pairs
(`parent_id` empty). Its connected components share no drawing and no artwork, so giving whole
components to one set keeps every artwork (and drawing) in one set. Each fold shuffles the
components with its own seed (`seed + k`) and cuts the permutation 60/25/15 (see `set_sizes` for the
rounding).

Styled copies (catalogue rows with `parent_id` set, or pair rows with `parent_id` set) inherit
their parent's pairs, carry its `pair_id`, and are kept only when the parent is in train: validation
and test queries are always originals.

Fold files (`folds/fold_XX.csv`) have the thesis columns `pair_id, drawing_id, artwork_id, set,
parent_id`; `pair_id` is the row position of the original pair in the pairs as read (`read_pairs`:
kept pairs, duplicates removed).

Expert non-matches (`negatives_csv`, the `negatives.csv` that `drawmatch export` writes beside the
pairs) go into the folds with their drawing: each fold gets `folds/negatives_XX.csv` (columns
`drawing_id, artwork_id, set`), a negative taking the set of its drawing's component in that fold,
so a train drawing's non-matches train and a test drawing's stay out of training. The artwork
needs no set: every artwork is in the gallery of every set (one in no pair too). A negative whose
drawing is in no pair is dropped and counted (it is in no fold: neither a query nor a training
anchor); one that is also a kept pair contradicts it and is refused (settle it in the workbench).
Without `negatives_csv` no negatives file is written, and those of an earlier split are removed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, ConfigError, save_config, setting
from drawmatch.data.catalogue import catalogue_path, read_catalogue
from drawmatch.data.pairs import (
    PairsError,
    check_collections,
    check_known,
    read_negatives,
    read_pairs,
)


@dataclass(frozen=True)
class SplitConfig(Config):
    """Artwork-disjoint folds: connected components of the pair graph, assigned train/val/test by
    the fractions below (thesis sec. 5.1.1: 60/25/15, 11 folds); fold k uses seed `seed + k`."""

    out: str = setting("drawmatch-out", help="output root")
    pairs_csv: str | None = setting(None, help="pairs file split")
    n_folds: int = setting(11, ge=1, help="folds made")
    seed: int = setting(0, ge=0, help="seed of fold 0")
    train: float = setting(0.6, ge=0, le=1, help="share of the pair graph's components in train")
    val: float = setting(0.25, ge=0, le=1, help="share in validation")
    test: float = setting(0.15, ge=0, le=1, help="share in test")
    include_styled: bool = setting(True, help="the drawings' style copies go with their drawing")
    negatives_csv: str | None = setting(
        None, help="expert non-matches carried into the folds (null: none)"
    )

    def check(self) -> None:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError(
                f"train, val, test: {self.train}, {self.val}, {self.test} must sum to 1"
            )


log = logging.getLogger(__name__)

SETS = ("train", "val", "test")
FOLD_COLUMNS = ["pair_id", "drawing_id", "artwork_id", "set", "parent_id"]
NEGATIVES_COLUMNS = ["drawing_id", "artwork_id", "set"]
FOLDS_DIR = "folds"

Component = tuple[list[str], list[str]]


@dataclass
class SplitResult:
    """What the split job wrote: fold files, the summary, and whether a catalogue was used."""

    folds_dir: str
    fold_files: list[str]
    summary: list[dict[str, Any]] = field(default_factory=list)
    used_catalogue: bool = False
    styled_rows: int = 0
    negative_files: list[str] = field(default_factory=list)
    negatives: dict[str, int] = field(default_factory=dict)  # read, carried, dropped_no_pair


def _is_set(value: object) -> bool:
    """True for a non-empty id (not None, NaN or "")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value) != ""


def _originals(pairs: pd.DataFrame) -> pd.Series:
    """Mask of the pair rows that are not styled copies (`parent_id` empty or absent)."""
    if "parent_id" not in pairs.columns:
        return pd.Series(True, index=pairs.index)
    return pd.Series([not _is_set(p) for p in pairs["parent_id"]], index=pairs.index)


def pair_components(pairs: pd.DataFrame) -> list[Component]:
    """Connected components of the bipartite drawing-artwork graph of `pairs` (one edge per row).

    Node keys are prefixed (`d:` / `a:`), so a drawing and an artwork with the same id string stay
    two nodes. Returns `(sorted drawing ids, sorted artwork ids)` per component, ordered by each
    component's smallest drawing id.
    """
    graph: nx.Graph = nx.Graph()
    for drawing, artwork in zip(pairs["drawing_id"], pairs["artwork_id"], strict=True):
        graph.add_edge(("d", str(drawing)), ("a", str(artwork)))
    components: list[Component] = []
    for nodes in nx.connected_components(graph):
        drawings = sorted(key for kind, key in nodes if kind == "d")
        artworks = sorted(key for kind, key in nodes if kind == "a")
        components.append((drawings, artworks))
    components.sort(key=lambda c: c[0][0])
    return components


def set_sizes(
    n: int, fractions: tuple[float, float, float] = (0.6, 0.25, 0.15)
) -> tuple[int, int, int]:
    """Numbers of components for train, val, test out of `n`.

    train = floor(f_train * n + 0.5) and val = floor(f_val * n + 0.5) (round half up), test = the
    rest. When n >= 3, every set with a positive fraction gets at least one component: an empty one
    takes a component from the largest set (train first on ties). If the rounding overshoots n, val
    and then train give back. E.g. n=3 -> (1, 1, 1), n=10 -> (6, 3, 1), n=20 -> (12, 5, 3).
    """
    f_train, f_val, _f_test = fractions
    counts = [math.floor(f_train * n + 0.5 + 1e-9), math.floor(f_val * n + 0.5 + 1e-9)]
    counts.append(n - counts[0] - counts[1])
    for i in (1, 0):
        if counts[2] < 0:
            give = min(counts[i], -counts[2])
            counts[i] -= give
            counts[2] += give
    if n >= 3:
        for i, frac in enumerate(fractions):
            if frac > 0 and counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts[0], counts[1], counts[2]


def assign_components(
    n_components: int, seed: int, fractions: tuple[float, float, float] = (0.6, 0.25, 0.15)
) -> list[str]:
    """The set ("train"/"val"/"test") of each of `n_components` components.

    A seeded permutation (`numpy.random.default_rng(seed).permutation`) orders the components; the
    first `set_sizes(n)[0]` of that order go to train, the next `set_sizes(n)[1]` to val, the rest
    to test.
    """
    n_train, n_val, _n_test = set_sizes(n_components, fractions)
    order = np.random.default_rng(seed).permutation(n_components)
    sets = [""] * n_components
    for rank, comp in enumerate(order):
        sets[int(comp)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return sets


def _styled_pair_rows(pairs: pd.DataFrame, fold: pd.DataFrame) -> pd.DataFrame:
    """Fold rows for pair rows that name a styled copy: parent's set and pair_id, train only."""
    styled = pairs[~_originals(pairs)]
    if styled.empty:
        return fold.iloc[0:0]
    keyed = fold.set_index(["drawing_id", "artwork_id"])
    triples = list(
        zip(styled["drawing_id"], styled["artwork_id"], styled["parent_id"], strict=True)
    )
    missing = [f"{d} (parent {p}) - {a}" for d, a, p in triples if (str(p), a) not in keyed.index]
    if missing:
        raise PairsError(
            f"{len(missing)} styled pair(s) without the same pair for their parent drawing: "
            + ", ".join(missing[:20])
        )
    rows = []
    for d, a, p in triples:
        parent = keyed.loc[(str(p), a)]
        if parent["set"] == "train":
            rows.append(
                dict(
                    pair_id=int(parent["pair_id"]),
                    drawing_id=d,
                    artwork_id=a,
                    set="train",
                    parent_id=str(p),
                )
            )
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def make_folds(
    pairs: pd.DataFrame,
    n_folds: int = 11,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.25, 0.15),
) -> list[pd.DataFrame]:
    """`n_folds` artwork-disjoint splits of `pairs` (as `read_pairs` returns them); fold k uses
    seed `seed + k`. Each fold has the columns `pair_id, drawing_id, artwork_id, set, parent_id`
    (parent_id None for originals); `pair_id` is the row position in `pairs`. Pair rows with a
    `parent_id` are styled copies: kept, with their parent pair's pair_id, only in train."""
    pairs = pairs.reset_index(drop=True)
    originals = pairs[_originals(pairs)]
    components = pair_components(originals)
    component_of = {d: i for i, (drawings, _a) in enumerate(components) for d in drawings}
    comp_index = [component_of[str(d)] for d in originals["drawing_id"]]
    folds = []
    for k in range(n_folds):
        sets = assign_components(len(components), seed + k, fractions)
        fold = pd.DataFrame(
            {
                "pair_id": originals.index.astype(int),
                "drawing_id": originals["drawing_id"].astype(str).to_numpy(),
                "artwork_id": originals["artwork_id"].astype(str).to_numpy(),
                "set": [sets[c] for c in comp_index],
                "parent_id": None,
            }
        )[FOLD_COLUMNS]
        styled = _styled_pair_rows(pairs, fold)
        if not styled.empty:
            fold = pd.concat([fold, styled], ignore_index=True)
        folds.append(fold.reset_index(drop=True))
    return folds


def add_styled_copies(fold: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """`fold` plus the pairs of the styled copies of its train drawings.

    Styled copies are catalogue rows with `parent_id` set and status ok (drawings only where the
    catalogue has a `collection` column). Each copy of a drawing in train gets that drawing's pairs,
    with `parent_id` = the parent id, the parent pair's `pair_id`, and set train; copies of val and
    test drawings are left out. Rows already in `fold` are not repeated.
    """
    copies = catalogue[[_is_set(p) for p in catalogue["parent_id"]]]
    copies = copies[copies["status"] == "ok"]
    if "collection" in copies.columns:
        copies = copies[copies["collection"] == "drawing"]
    originals = fold[[not _is_set(p) for p in fold["parent_id"]]]
    train = originals[originals["set"] == "train"]
    if copies.empty or train.empty:
        return fold
    merged = (
        copies[["id", "parent_id"]]
        .astype(str)
        .merge(
            train[["pair_id", "drawing_id", "artwork_id"]],
            left_on="parent_id",
            right_on="drawing_id",
        )
    )
    added = pd.DataFrame(
        {
            "pair_id": merged["pair_id"].astype(int),
            "drawing_id": merged["id"],
            "artwork_id": merged["artwork_id"],
            "set": "train",
            "parent_id": merged["parent_id"],
        }
    )
    present = set(zip(fold["drawing_id"], fold["artwork_id"], strict=True))
    keys = zip(added["drawing_id"], added["artwork_id"], strict=True)
    added = added[[key not in present for key in keys]]
    if added.empty:
        return fold
    added = added.sort_values(["pair_id", "drawing_id"], kind="stable")
    return pd.concat([fold, added[FOLD_COLUMNS]], ignore_index=True)


def fold_summary(fold: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per set: components, pairs, drawings, artworks of the original pairs, and styled_pairs."""
    summary = {}
    original = pd.Series([not _is_set(p) for p in fold["parent_id"]], index=fold.index)
    for name in SETS:
        in_set = fold["set"] == name
        orig = fold[in_set & original]
        summary[name] = {
            "components": len(pair_components(orig)),
            "pairs": len(orig),
            "drawings": int(orig["drawing_id"].nunique()),
            "artworks": int(orig["artwork_id"].nunique()),
            "styled_pairs": int((in_set & ~original).sum()),
        }
    return summary


def _table(summary: list[dict[str, Any]]) -> str:
    """Fixed-width table: one line per fold, components/pairs/drawings/artworks per set."""
    head = "fold " + " ".join(f"{s + ' c/p/d/a':>18}" for s in SETS) + "  styled"
    lines = [head]
    for entry in summary:
        cells = []
        for s in SETS:
            v = entry[s]
            cells.append(
                f"{v['components']}/{v['pairs']}/{v['drawings']}/{v['artworks']}".rjust(18)
            )
        styled = sum(entry[s]["styled_pairs"] for s in SETS)
        lines.append(f"{entry['fold']:>4} " + " ".join(cells) + f"  {styled:>6}")
    return "\n".join(lines)


def check_negatives(negatives: pd.DataFrame, pairs: pd.DataFrame, where: str) -> None:
    """Refuse (one PairsError) negatives that are also kept pairs: an expert said both."""
    kept = set(zip(pairs["drawing_id"].astype(str), pairs["artwork_id"].astype(str)))
    both = [
        f"{d} - {a}"
        for d, a in zip(negatives["drawing_id"], negatives["artwork_id"])
        if (d, a) in kept
    ]
    if both:
        raise PairsError(
            f"{where}: {len(both)} non-match(es) that are also kept pairs: {', '.join(both[:20])} "
            "(decide each one: keep the pair or the non-match)"
        )


def fold_negatives(negatives: pd.DataFrame, fold: pd.DataFrame) -> pd.DataFrame:
    """The negatives of one fold: each with the set of its drawing in `fold` (its original pair
    rows); negatives whose drawing is in no pair are left out. Columns drawing_id, artwork_id,
    set, in the order of `negatives`."""
    originals = fold[[not _is_set(p) for p in fold["parent_id"]]]
    set_of = dict(zip(originals["drawing_id"].astype(str), originals["set"]))
    placed = negatives[negatives["drawing_id"].isin(set_of)]
    return placed.assign(set=[set_of[d] for d in placed["drawing_id"]])[NEGATIVES_COLUMNS]


def load_negatives(
    config: SplitConfig, pairs: pd.DataFrame, catalogue: pd.DataFrame | None
) -> pd.DataFrame | None:
    """The checked `negatives_csv` (None without the key): ids in the catalogue (where there is
    one) and in the right columns, none also a kept pair; each problem is one PairsError."""
    if not config.negatives_csv:
        return None
    where = str(config.negatives_csv)
    negatives = read_negatives(config.negatives_csv)
    if catalogue is not None:
        check_known(negatives, set(catalogue["id"].astype(str)), where=where)
        collection_of = dict(zip(catalogue["id"].astype(str), catalogue["collection"]))
        check_collections(negatives, collection_of, where=where)
    check_negatives(negatives, pairs, where)
    return negatives


def write_negatives(
    folds_dir: str, negatives: pd.DataFrame | None, folds: list[pd.DataFrame]
) -> tuple[list[str], dict[str, int]]:
    """Write `negatives_XX.csv` beside each fold file (none without negatives: those of an
    earlier split are removed). Returns the files and the counts: read, carried into every fold,
    dropped because their drawing is in no pair."""
    files: list[str] = []
    counts: dict[str, int] = {}
    if negatives is not None:
        for k, fold in enumerate(folds):
            placed = fold_negatives(negatives, fold)
            path = storage.join(folds_dir, f"negatives_{k:02d}.csv")
            storage.write_bytes(path, placed.to_csv(index=False).encode())
            files.append(path)
        carried = len(fold_negatives(negatives, folds[0])) if folds else 0
        counts = {
            "read": len(negatives),
            "carried": carried,
            "dropped_no_pair": len(negatives) - carried,
        }
    for stale in storage.list_files(folds_dir, "negatives_*.csv"):
        if storage.name(stale) not in {storage.name(f) for f in files}:
            storage.remove(stale)
    return files, counts


def run(config: SplitConfig) -> SplitResult:
    """Write `<out>/folds/fold_XX.csv`, `summary.json` and `split_config.yaml`.

    With `<out>/catalogue.parquet`, every pair id must be in it (one PairsError lists all unknown
    ids) and, if `include_styled`, styled copies of train drawings are added. Without a catalogue
    the pairs are split alone.
    """
    if not config.pairs_csv:
        raise ValueError("split needs pairs_csv=<file>")
    pairs = read_pairs(config.pairs_csv)
    if pairs.empty:
        raise PairsError(f"{config.pairs_csv}: no kept pairs to split")
    out = config.out
    catalogue = None
    if storage.exists(catalogue_path(out)):
        catalogue = read_catalogue(out)
        check_known(pairs, set(catalogue["id"].astype(str)), where=str(config.pairs_csv))
        collection_of = dict(zip(catalogue["id"].astype(str), catalogue["collection"]))
        check_collections(pairs, collection_of, where=str(config.pairs_csv))
    else:
        print(
            f"no catalogue at {catalogue_path(out)}: splitting the pairs alone (no id check, "
            "no styled copies)"
        )
    negatives = load_negatives(config, pairs, catalogue)  # checked before anything is written
    fractions = (config.train, config.val, config.test)
    folds = make_folds(pairs, config.n_folds, config.seed, fractions)
    folds_dir = storage.join(out, FOLDS_DIR)
    storage.makedirs(folds_dir)
    files: list[str] = []
    summary: list[dict[str, Any]] = []
    styled_rows = 0
    for k, fold in enumerate(folds):
        if catalogue is not None and config.include_styled:
            fold = add_styled_copies(fold, catalogue)
        styled_rows += int(sum(_is_set(p) for p in fold["parent_id"]))
        path = storage.join(folds_dir, f"fold_{k:02d}.csv")
        storage.write_bytes(path, fold.to_csv(index=False, na_rep="").encode())
        files.append(path)
        summary.append({"fold": k, "seed": config.seed + k, **fold_summary(fold)})
    for stale in storage.list_files(folds_dir, "fold_*.csv"):
        if storage.name(stale) not in {storage.name(f) for f in files}:
            storage.remove(stale)
    negative_files, negative_counts = write_negatives(folds_dir, negatives, folds)
    for entry, path in zip(summary, negative_files):
        placed = storage.read_csv(path, dtype=str, keep_default_na=False)
        entry["negatives"] = {name: int((placed["set"] == name).sum()) for name in SETS}
    storage.write_bytes(
        storage.join(folds_dir, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    save_config(config, storage.join(folds_dir, "split_config.yaml"))
    print(
        f"{len(pairs)} pairs, {len(pair_components(pairs[_originals(pairs)]))} components, "
        f"{len(folds)} folds -> {folds_dir}"
    )
    print(_table(summary))
    if negative_counts:
        print(
            f"non-matches: {negative_counts['read']} read, {negative_counts['carried']} carried into "
            f"every fold (negatives_XX.csv, set of their drawing), "
            f"{negative_counts['dropped_no_pair']} dropped (drawing in no pair)"
        )
    log.info("wrote %d folds to %s", len(files), folds_dir)
    return SplitResult(
        folds_dir,
        files,
        summary,
        catalogue is not None,
        styled_rows,
        negative_files,
        negative_counts,
    )

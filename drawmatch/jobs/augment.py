"""The augment job: styled copies of drawings (thesis sec. 5.2.2) as new catalogue rows.

Reads `<out>/catalogue.parquet`, selects originals (no parent, status ok, not a verso) by
`config.select`, runs `StyleAugmenter` over them with Ray Data and appends one row per
(original, style) to the catalogue. Styled rows inherit their parent's metadata columns. Copies
already present with status ok and an existing file are skipped, so a second run does no work twice
and a killed run resumes where it stopped (its finished files are simply redone once).

The `neural` style renders each original in the style of a reference image that `run` chooses
before Ray starts (`neural_references`, rule `neural_reference`) and hands to the actors as the
columns `ref_root` and `ref_path`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from drawmatch.augment.styles import (
    NEURAL,
    OUTPUT_COLUMNS,
    STYLES,
    NeuralStyleParams,
    StyleAugmenter,
    StyleParams,
    augmenter_kwargs,
    check_styles,
    styled_id,
)
from drawmatch.core import storage
from drawmatch.core.config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Config,
    save_config,
    section,
    setting,
)
from drawmatch.core.locks import catalogue_lock
from drawmatch.data import catalogue
from drawmatch.data.pairs import read_pairs
from drawmatch.runtime.pipeline import map_batches
from drawmatch.runtime.ray_setup import RayConfig, init_ray

NEURAL_REFERENCES = ("auto", "drawing", "artwork")


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Write style copies (`styles`) of the selected originals: `select=paired` the drawings of
    `pairs_csv`, `drawings` every usable drawing, `all` drawings and artworks. The `neural` style
    (not in the default list: about a second per optimisation step on CPU) renders each image in
    the style of a reference image chosen by `neural_reference`: `auto` a drawing's paired artwork
    (a random artwork if it has none or pairs_csv is not given) and an artwork a random drawing;
    `drawing` or `artwork` a random image of that collection (seeded by `neural.seed`)."""

    out: str = setting("drawmatch-out", help="output root")
    styles: tuple[str, ...] = setting(STYLES, choices=(*STYLES, NEURAL), help="styles written")
    params: StyleParams = section(StyleParams)
    neural: NeuralStyleParams = section(NeuralStyleParams)
    neural_reference: str = setting(
        "auto", choices=NEURAL_REFERENCES, help="neural: where the style image comes from"
    )
    select: str = setting(
        "paired", choices=("paired", "drawings", "all"), help="originals that get style copies"
    )
    pairs_csv: str | None = setting(None, help="pairs file (select=paired)")
    max_side: int = setting(
        1024, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE, help="longer side of the copies in px"
    )
    jpeg_quality: int = setting(92, ge=1, le=100, help="JPEG quality of the copies")
    batch_size: int = setting(4, ge=1, help="images per Ray Data batch")
    concurrency: int | None = setting(None, ge=1, help="parallel tasks (null: as the CPUs allow)")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")
    ray: RayConfig = section(RayConfig)


SELECTIONS = ("paired", "drawings", "all")
CONFIG_FILE = "augment_config.yaml"


@dataclass(frozen=True)
class AugmentResult:
    """Counts of one augment run. `inputs`: originals selected; `tasks`: (original, style) copies
    made this run; `written`: of those, written with status ok; `skipped`: copies already done;
    `errors`: copies in error, by reason in `errors_by_reason`; `not_usable`: paired drawings that
    are in error, versos or styled copies themselves and were not augmented."""

    inputs: int
    tasks: int
    written: int
    skipped: int
    errors: int
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    not_usable: int = 0
    catalogue_rows: int = 0


def select_originals(cat: pd.DataFrame, config: AugmentConfig) -> tuple[pd.DataFrame, int]:
    """The catalogue rows to augment and the number of paired ids that are not usable originals."""
    if config.select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {config.select!r}")
    originals = catalogue.originals(cat)
    not_duplicate = cat["duplicate_of"].isna() if "duplicate_of" in cat else True
    if config.select == "all":
        return cat[originals & not_duplicate], 0
    drawings = cat["collection"] == "drawing"
    if config.select == "drawings":
        return cat[originals & drawings & not_duplicate], 0
    if not config.pairs_csv:
        raise ValueError("select=paired needs pairs_csv (the pairs file naming the drawings)")
    pairs = read_pairs(config.pairs_csv)
    ids = set(pairs["parent_id"].where(pairs["parent_id"].notna(), pairs["drawing_id"]))
    unknown = sorted(ids - set(cat["id"]))
    if unknown:
        raise ValueError(
            f"{config.pairs_csv} names {len(unknown)} drawing id(s) not in the catalogue: "
            f"{', '.join(unknown[:20])}"
        )
    paired = cat["id"].isin(ids)
    chosen = cat[paired & originals & drawings]
    return chosen, len(ids) - len(chosen)


def done_ids(cat: pd.DataFrame, roots: dict[str, str]) -> set[str]:
    """Ids of styled rows with status ok whose file exists and whose parent has not changed since
    (its sha256 equals the row's `parent_sha256`; rows of older catalogues without it count)."""
    styled = cat[cat["parent_id"].notna() & (cat["status"] == "ok")]
    if styled.empty:
        return set()
    parent_sha = cat.drop_duplicates("id").set_index("id")["sha256"]
    recorded = styled["parent_sha256"] if "parent_sha256" in styled else None
    current = parent_sha.reindex(styled["parent_id"]).to_numpy()
    unchanged = (
        [True] * len(styled)
        if recorded is None
        else [pd.isna(r) or r == c for r, c in zip(recorded, current)]
    )
    paths = catalogue.resolve_paths(styled, roots)
    present: set[str] = set()
    for folder in sorted({storage.parent(p) for p in paths}):  # one listing per style folder
        present.update(storage.list_files(folder))
    return {
        i
        for i, p, same in zip(styled["id"], paths, unchanged, strict=True)
        if p in present and same
    }


def _with_dtypes(new: pd.DataFrame, cat: pd.DataFrame) -> pd.DataFrame:
    """Cast `new`'s columns to the catalogue's dtypes where the values allow it."""
    for col in ("width", "height"):
        new[col] = pd.array(new[col].tolist(), dtype="Int64")
    for col in new.columns:
        if col not in cat.columns or col in ("width", "height"):
            continue
        try:
            new[col] = new[col].astype(cat[col].dtype)
        except (TypeError, ValueError):
            pass
    return new


def merge_rows(cat: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Catalogue with `new` styled rows added (replacing rows of the same id); every column of
    the catalogue that the augmenter does not produce is copied from the parent row, except
    `duplicate_of` (null), `verso` (false) and `parent_sha256` (the parent's sha256, so that a
    later run redoes the copies of a parent whose content changed)."""
    if new.empty:
        return cat
    new = new.reset_index(drop=True).copy()
    parents = cat.drop_duplicates("id").set_index("id")
    for col in cat.columns:
        if col in OUTPUT_COLUMNS:
            continue
        if col == "duplicate_of":
            new[col] = None
        elif col == "parent_sha256":
            new[col] = parents["sha256"].reindex(new["parent_id"]).to_numpy()
        elif col == "verso":
            new[col] = False
        else:
            new[col] = parents[col].reindex(new["parent_id"]).to_numpy()
    new = _with_dtypes(new[list(cat.columns)], cat)
    kept = cat[~cat["id"].isin(set(new["id"]))]
    parts = [df for df in (kept, new) if not df.empty]
    return pd.concat(parts, ignore_index=True)


def _pick(options: list[str], key: str, seed: int) -> str:
    """One of `options`, the same for the same key and seed (sha256, not Python's hash)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return options[int(digest[:16], 16) % len(options)]


def neural_references(
    chosen: pd.DataFrame,
    cat: pd.DataFrame,
    rule: str,
    pairs: pd.DataFrame | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """The style reference (a catalogue id) of each chosen row, by `rule`:
    - `auto`: a drawing gets one of its paired artworks (`pairs`: drawing_id, artwork_id), or a
      random artwork if it has none; an artwork gets a random drawing;
    - `drawing` / `artwork`: a random original of that collection.
    References are usable originals (no versos, errors, styled copies or duplicates), never the
    row itself; "random" is a seeded choice by id, so a rerun picks the same. A row for which no
    reference exists is left out of the result (its copy becomes an error row)."""
    pool = cat[catalogue.originals(cat)]
    if "duplicate_of" in pool:
        pool = pool[pool["duplicate_of"].isna()]
    by_collection = {
        name: sorted(str(i) for i in pool.loc[pool["collection"] == name, "id"])
        for name in ("drawing", "artwork")
    }
    paired: dict[str, list[str]] = {}
    if pairs is not None and rule == "auto":
        artworks = set(by_collection["artwork"])
        for d, a in zip(pairs["drawing_id"].astype(str), pairs["artwork_id"].astype(str)):
            if a in artworks:
                paired.setdefault(d, []).append(a)
    refs: dict[str, str] = {}
    for rid, collection in zip(chosen["id"].astype(str), chosen["collection"]):
        if rule == "auto":
            options = sorted(set(paired.get(rid, [])))
            if not options:
                other = "artwork" if collection == "drawing" else "drawing"
                options = by_collection[other]
        else:
            options = by_collection[rule]
        options = [o for o in options if o != rid]
        if options:
            refs[rid] = _pick(options, rid, seed)
    return refs


def _with_references(todo: pd.DataFrame, cat: pd.DataFrame, config: AugmentConfig) -> pd.DataFrame:
    """`todo` with columns `ref_root`, `ref_path` (null where `neural` is not to be made)."""
    wants = todo["styles"].map(lambda s: NEURAL in s.split(","))
    pairs = read_pairs(config.pairs_csv) if config.pairs_csv else None
    refs = neural_references(todo[wants], cat, config.neural_reference, pairs, config.neural.seed)
    rows = cat.drop_duplicates("id").set_index("id")
    ref_ids = todo["id"].astype(str).map(refs)
    known = ref_ids.notna()
    return todo.assign(
        ref_root=rows["root"].reindex(ref_ids).where(known.to_numpy(), None).to_numpy(),
        ref_path=rows["path"].reindex(ref_ids).where(known.to_numpy(), None).to_numpy(),
    )


def _default_concurrency(n_batches: int) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n_batches, cpus))


def _run_ray(todo: pd.DataFrame, config: AugmentConfig, roots: dict[str, str]) -> pd.DataFrame:
    import ray

    init_ray(config.ray)
    n_batches = -(-len(todo) // max(1, config.batch_size))
    kwargs = augmenter_kwargs(
        config.styles,
        config.params,
        roots,
        storage.absolute(config.out),
        config.max_side,
        config.jpeg_quality,
        config.max_image_pixels,
        config.neural if NEURAL in config.styles else None,
    )
    concurrency = config.concurrency or _default_concurrency(n_batches)
    # enough blocks for every actor to get work, not one block per batch on a large collection
    blocks = max(1, min(n_batches, max(200, 4 * concurrency)))
    columns = ["id", "collection", "root", "path", "styles"]
    columns += [c for c in ("ref_root", "ref_path") if c in todo]
    frame = todo[columns].reset_index(drop=True)
    step = -(-len(frame) // blocks)
    # split by hand: from_pandas(override_num_blocks=...) uses np.array_split, which breaks on
    # DataFrames with the installed pandas
    parts = [frame.iloc[i : i + step] for i in range(0, len(frame), step)]
    ds = map_batches(
        ray.data.from_pandas(parts),
        StyleAugmenter,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        fn_constructor_kwargs=kwargs,
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    frames = [b for b in ds.iter_batches(batch_format="pandas", batch_size=None) if len(b)]
    if not frames:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(OUTPUT_COLUMNS)]


@catalogue_lock("augment")  # one writer of catalogue.parquet per output root (drawmatch.core.locks)
def run(config: AugmentConfig) -> AugmentResult:
    """Write styled copies of the selected originals and add them to the catalogue."""
    styles = check_styles(config.styles)
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {config.batch_size}")
    out = config.out
    cat = catalogue.read_catalogue(out)
    roots = catalogue.read_roots(out)
    chosen, not_usable = select_originals(cat, config)
    done = done_ids(cat, roots)

    todo_styles: list[str] = []
    skipped = 0
    for pid in chosen["id"]:
        missing = [s for s in styles if styled_id(str(pid), s) not in done]
        skipped += len(styles) - len(missing)
        todo_styles.append(",".join(missing))
    todo = chosen.assign(styles=todo_styles)
    todo = todo[todo["styles"] != ""]
    tasks = sum(len(s.split(",")) for s in todo["styles"])
    if NEURAL in styles and len(todo):
        todo = _with_references(todo, cat, config)

    save_config(config, storage.join(out, CONFIG_FILE))
    new = _run_ray(todo, config, roots) if tasks else pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    if len(new) != tasks:
        raise RuntimeError(f"augment produced {len(new)} rows for {tasks} (original, style) tasks")
    merged = merge_rows(cat, new)
    if tasks:
        catalogue.write_catalogue(merged, out)

    errors = new[new["status"] != "ok"]
    reasons: dict[str, int] = dict(Counter(str(e) for e in errors["error"]))
    result = AugmentResult(
        inputs=len(chosen),
        tasks=tasks,
        written=int((new["status"] == "ok").sum()),
        skipped=skipped,
        errors=len(errors),
        errors_by_reason=reasons,
        not_usable=not_usable,
        catalogue_rows=len(merged),
    )
    _report(result, config)
    return result


def _report(result: AugmentResult, config: AugmentConfig) -> None:
    lines: list[Any] = [
        (
            f"augment: {result.inputs} originals selected (select={config.select}), "
            f"styles {', '.join(config.styles)}"
        ),
        f"  written: {result.written}",
        f"  skipped (already done): {result.skipped}",
        f"  errors: {result.errors}",
    ]
    lines += [f"    {n} x {reason}" for reason, n in sorted(result.errors_by_reason.items())]
    if result.not_usable:
        lines.append(f"  paired ids not usable (error, verso or styled): {result.not_usable}")
    lines.append(f"  catalogue rows: {result.catalogue_rows}")
    print("\n".join(str(x) for x in lines))

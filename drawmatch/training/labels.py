"""Labelled image sets for the label-based tasks (artist-style verification, movement
classification): loading, label-disjoint and stratified splits, triplet and P x K samplers, and
the image loader their training workers use.

A labelled set is a table with one row per image: `id` (unique), `path` (a local path or URI the
workers open) and `label` (a string). It comes from one of three sources (`LabelsConfig`):

- folder per label: `images=DIR`, no `labels_csv`; an image's label is its folder path under
  `DIR`, cut to `folder_depth` levels (Pandora: `DIR/<movement>/[<artist>/]image.jpg` with depth 1
  gives the movement). Images directly in `DIR` have no label. The id is the path under `DIR`.
- a metadata CSV: `images=DIR labels_csv=FILE`; `id_column` (default `filename`) names each
  image's path under `DIR`, `label_column` its label (Painter By Numbers: `train_info.csv`,
  columns `filename, artist, title, style, genre, date`, images in `train/`).
- the catalogue under `out`: no `images`; usable original images, labelled by the catalogue column
  `label_column` (e.g. `artist`) or by `labels_csv` keyed by catalogue id (`id_column` default
  `id`).

`label_pattern` (a regular expression) turns a value into its label: the first group of its
first match (e.g. `stamps/([^/]+)/` keeps a path's category folder). Rows with no label, a label
that does not match, or a file that does not exist are counted and left out; labels with fewer
than `min_per_label` images are dropped and counted (Painter By Numbers dropped its one-painting
artists). Every count is in `LabelledSet.summary`.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from drawmatch.core import storage
from drawmatch.core.config import Config, ConfigError, save_config, section, setting
from drawmatch.core.images import open_image
from drawmatch.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_eval_array,
    normalise,
    train_transform,
)
from drawmatch.training.run_config import TrainingRunConfig

LABEL_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class LabelsConfig(Config):
    """A labelled image set: `images` (a folder: one sub-folder per label, cut to `folder_depth`
    levels, or with `labels_csv`) or, without `images`, the catalogue under `out`. `labels_csv`:
    `id_column` names each image (its path under `images`; default `filename`, or the catalogue
    id, default `id`), `label_column` its label (a catalogue column when there is no CSV).
    `label_pattern`: a regular expression whose first group is the label. Labels with fewer than
    `min_per_label` images are dropped (and counted)."""

    images: str | None = setting(None, help="folder of images (null: the catalogue under out)")
    labels_csv: str | None = setting(None, help="CSV of image ids and labels")
    id_column: str | None = setting(None, help="labels_csv column naming each image")
    label_column: str = setting("label", help="column holding the label")
    label_pattern: str | None = setting(
        None, help="regular expression whose first group is the label"
    )
    folder_depth: int = setting(1, ge=1, help="folder levels that make a label")
    min_per_label: int = setting(2, ge=1, help="labels with fewer images are dropped")
    extensions: tuple[str, ...] = setting(LABEL_EXTENSIONS, help="image file extensions")

    def check(self) -> None:
        if self.label_pattern is not None:
            try:
                re.compile(self.label_pattern)
            except re.error as exc:
                raise ConfigError(
                    f"label_pattern: {self.label_pattern!r} is not valid ({exc})"
                ) from None


@dataclass(frozen=True)
class LabelRunConfig(TrainingRunConfig):
    """A label job's run (verify, classify): the training keys and the labelled set `data`."""

    data: LabelsConfig = section(LabelsConfig)


SPLITS_FILE = "splits.csv"


@dataclass
class LabelledSet:
    """`images`: `id, path, label` (one row per image, sorted by id); `summary`: what went in,
    what was left out and why."""

    images: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return sorted(self.images["label"].unique())


LabelJobConfig = TypeVar("LabelJobConfig", bound=LabelRunConfig)


def prepared_config(config: LabelJobConfig) -> LabelJobConfig:
    """A label job's config as it runs and is saved: absolute paths (Ray workers run elsewhere),
    and the backbone's own input size and pooling where the config leaves them null."""
    from drawmatch.models.backbones import resolve_model

    data, model = config.data, resolve_model(config.model)
    return replace(
        config,
        out=storage.absolute(config.out),
        data=replace(
            data,
            images=storage.absolute(data.images) if data.images else None,
            labels_csv=storage.absolute(data.labels_csv) if data.labels_csv else None,
        ),
        model=replace(model, weights=storage.absolute(model.weights) if model.weights else None),
    )


def start_label_run(
    config: LabelRunConfig,
    table: pd.DataFrame,
    summary: dict[str, Any],
    runs: str,
    name: str,
    job: str,
) -> str:
    """Write a label run's folder `runs/name` before training: `splits.csv` (`table`: `id, path,
    label, set`), `data_summary.json` (`summary` with images and labels per set, added here) and
    `<job>_config.yaml`. Returns the run folder."""
    counts = table.groupby("set")["label"].agg(["count", "nunique"])
    summary["sets"] = {
        s: {"images": int(r["count"]), "labels": int(r["nunique"])} for s, r in counts.iterrows()
    }
    run_dir = storage.join(runs, name)
    storage.makedirs(run_dir)
    storage.write_text(storage.join(run_dir, SPLITS_FILE), table.to_csv(index=False))
    storage.write_text(storage.join(run_dir, "data_summary.json"), json.dumps(summary, indent=2))
    save_config(config, storage.join(run_dir, f"{job}_config.yaml"))
    return run_dir


def fit_label_run(loop: Any, config: LabelRunConfig, runs: str, name: str, what: str) -> Any:
    """Run a label job's training `loop` with Ray Train (`drawmatch.training.harness.fit_with_ray`:
    its workers, CPUs and GPU from `config`) as run `name` under `runs`; a rerun continues from
    the run's latest checkpoint. Returns the fit's result, whose checkpoint holds what the loop
    reported last. `what` names the run in errors ("verification", "classification")."""
    from drawmatch.core.config import to_dict
    from drawmatch.training.harness import fit_with_ray

    loop_config = {"config": to_dict(config), "run_dir": storage.join(runs, name)}
    return fit_with_ray(loop, loop_config, config, runs, name, what)


def _walk(root: str, extensions: tuple[str, ...]) -> list[str]:
    """Paths (posix, relative to `root`) of the files under `root` with one of `extensions`."""
    import pyarrow.fs as pafs

    fs, inner = storage.filesystem(root)
    selector = pafs.FileSelector(inner, allow_not_found=False, recursive=True)
    found = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.path.lower().endswith(extensions):
            found.append(posixpath.relpath(info.path, inner.rstrip("/") or "/"))
    return sorted(found)


def _apply_pattern(values: pd.Series, pattern: str | None) -> pd.Series:
    """Labels from raw values: stripped strings, the first group of `pattern` when given; None
    where a value is missing, empty or does not match."""
    regex = re.compile(pattern) if pattern else None

    def one(value: object) -> str | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        text = str(value).strip()
        if regex is not None:
            found = regex.search(text)
            text = (found.group(1) if found.groups() else found.group(0)).strip() if found else ""
        return text or None

    return values.map(one)


def load_labelled(config: LabelsConfig, out: str | None = None) -> LabelledSet:
    """The labelled set that `config` names (see the module docstring); `out` is the output root
    whose catalogue is read when `config.images` is not given."""
    summary: dict[str, Any] = {}
    if config.images is not None:
        root = config.images
        if not storage.is_dir(root):
            raise FileNotFoundError(f"data.images={root}: no such folder")
        files = _walk(root, tuple(e.lower() for e in config.extensions))
        summary["files_found"] = len(files)
        if config.labels_csv is None:
            summary["source"] = f"folder per label under {root} (depth {config.folder_depth})"
            parts = [f.split("/") for f in files]
            raw = pd.Series(
                ["/".join(p[: min(config.folder_depth, len(p) - 1)]) for p in parts], dtype=object
            )
            table = pd.DataFrame({"id": files, "path": [storage.join(root, f) for f in files]})
            table["label"] = _apply_pattern(raw, config.label_pattern)
        else:
            table, csv_summary = _from_csv(config, set(files), root)
            summary.update(csv_summary)
    else:
        if out is None:
            raise ValueError("give data.images=DIR, or an output root with a catalogue")
        table, cat_summary = _from_catalogue(config, out)
        summary.update(cat_summary)
    return _finish(table, config.min_per_label, summary)


def _read_label_csv(config: LabelsConfig, id_column: str) -> pd.DataFrame:
    assert config.labels_csv is not None
    if not storage.exists(config.labels_csv):
        raise FileNotFoundError(f"data.labels_csv={config.labels_csv}: no such file")
    frame = storage.read_csv(config.labels_csv, dtype=str, keep_default_na=False)
    missing = [c for c in (id_column, config.label_column) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{config.labels_csv}: no column(s) {missing}; its columns are {list(frame.columns)} "
            "(choose them with data.id_column= and data.label_column=)"
        )
    repeated = frame[id_column][frame[id_column].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(
            f"{config.labels_csv}: {len(repeated)} {id_column} value(s) appear more than once: "
            f"{repeated[:10]}"
        )
    return frame


def _from_csv(
    config: LabelsConfig, files: set[str], root: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    id_column = config.id_column or "filename"
    frame = _read_label_csv(config, id_column)
    names = frame[id_column].map(lambda s: posixpath.normpath(s.replace("\\", "/")).lstrip("/"))
    present = names.isin(files)
    summary = {
        "source": f"{config.labels_csv} (column {config.label_column}) over {root}",
        "csv_rows": len(frame),
        "missing_files": int((~present).sum()),
        "missing_examples": names[~present].head(10).tolist(),
    }
    frame, names = frame[present], names[present]
    table = pd.DataFrame(
        {
            "id": names.to_numpy(),
            "path": [storage.join(root, n) for n in names],
            "label": _apply_pattern(frame[config.label_column], config.label_pattern).to_numpy(),
        }
    )
    return table, summary


def _from_catalogue(config: LabelsConfig, out: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    from drawmatch.data import catalogue as cat

    catalogue = cat.read_catalogue(out)
    rows = catalogue[cat.originals(catalogue)]
    paths = cat.resolve_paths(rows, cat.read_roots(out))
    summary: dict[str, Any] = {"catalogue_rows": len(rows)}
    if config.labels_csv is not None:
        id_column = config.id_column or "id"
        frame = _read_label_csv(config, id_column)
        by_id = dict(zip(frame[id_column], frame[config.label_column]))
        unknown = sorted(set(by_id) - set(rows["id"]))
        summary.update(
            source=f"catalogue of {out}, labels from {config.labels_csv}",
            unknown_ids=len(unknown),
            unknown_examples=unknown[:10],
        )
        raw = pd.Series([by_id.get(i) for i in rows["id"]], dtype=object)
    else:
        if config.label_column not in rows.columns:
            raise ValueError(
                f"the catalogue of {out} has no column {config.label_column!r}; "
                f"choose one of {sorted(rows.columns)} or give data.labels_csv="
            )
        summary["source"] = f"catalogue of {out}, column {config.label_column}"
        raw = pd.Series(rows[config.label_column].to_numpy(), dtype=object)
    table = pd.DataFrame({"id": rows["id"].to_numpy(), "path": paths})
    table["label"] = _apply_pattern(raw, config.label_pattern).to_numpy()
    return table, summary


def _finish(table: pd.DataFrame, min_per_label: int, summary: dict[str, Any]) -> LabelledSet:
    unlabelled = table["label"].isna()
    table = table[~unlabelled]
    counts = table["label"].value_counts()
    small = sorted(counts[counts < min_per_label].index)
    kept = table[~table["label"].isin(small)].sort_values("id").reset_index(drop=True)
    summary.update(
        unlabelled=int(unlabelled.sum()),
        dropped_labels=len(small),
        dropped_label_examples=small[:10],
        dropped_images=int(counts[small].sum()) if small else 0,
        images=len(kept),
        labels=int(kept["label"].nunique()),
        min_per_label=min_per_label,
    )
    if kept.empty:
        raise ValueError(
            f"no labelled images left ({summary}): check data.images, data.labels_csv, "
            "data.label_column, data.label_pattern and data.min_per_label"
        )
    if kept["label"].nunique() < 2:
        raise ValueError(f"only one label left ({kept['label'].iloc[0]!r}): need at least two")
    return LabelledSet(kept, summary)


# ----------------------------------------------------------------------------------------------
# splits


def label_codes(table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The sorted labels of a labelled table (the classes) and each row's index among them."""
    classes = sorted(table["label"].unique())
    codes = table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return classes, codes


def label_disjoint_split(
    labels: pd.Series, test_fraction: float, val_fraction: float, seed: int
) -> pd.Series:
    """The set (`train`/`val`/`test`) of each image for verification (Painter By Numbers).

    Labels are shuffled with `seed`; the first `round(test_fraction * n_labels)` (at least one,
    and at most all but one) go to test with all their images, so test labels are unseen in
    training. Of the training labels' images, `round(val_fraction * n)` go to validation, drawn
    at random but never leaving a label with fewer than two training images (a positive pair).
    """
    rng = np.random.default_rng(seed)
    names = sorted(labels.unique())
    if len(names) < 3:
        raise ValueError(f"a label-disjoint split needs at least 3 labels, got {len(names)}")
    n_test = min(max(1, math.floor(test_fraction * len(names) + 0.5)), len(names) - 2)
    order = rng.permutation(len(names))
    test_labels = {names[i] for i in order[:n_test]}
    values = labels.to_numpy()
    sets = np.where(labels.isin(test_labels).to_numpy(), "test", "train").astype(object)
    train_idx = np.flatnonzero(sets == "train")
    target = math.floor(val_fraction * len(train_idx) + 0.5)
    left = pd.Series(values[train_idx]).value_counts().to_dict()
    chosen: list[int] = []
    for i in rng.permutation(train_idx):
        if len(chosen) >= target:
            break
        if left[values[i]] > 2:
            left[values[i]] -= 1
            chosen.append(int(i))
    sets[chosen] = "val"
    return pd.Series(sets, index=labels.index)


def stratified_split(
    labels: pd.Series, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """The set of each image for classification: per label, `round(f * n)` of its images (in a
    seeded random order) go to test and to validation, the rest (always at least one) to train."""
    rng = np.random.default_rng(seed)
    sets = pd.Series("train", index=labels.index, dtype=object)
    for label in sorted(labels.unique()):
        idx = np.flatnonzero((labels == label).to_numpy())
        n = len(idx)
        n_test = math.floor(test_fraction * n + 0.5)
        n_val = math.floor(val_fraction * n + 0.5)
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        order = rng.permutation(idx)
        sets.iloc[order[:n_test]] = "test"
        sets.iloc[order[n_test : n_test + n_val]] = "val"
    return sets


# ----------------------------------------------------------------------------------------------
# samplers


def _groups(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(k): np.flatnonzero(labels == k) for k in np.unique(labels)}


def random_triplets(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random triplets (n, 3) of indices into `labels` (N,) ints: (anchor, positive,
    negative), as Painter By Numbers draws them: an anchor label uniformly among the labels with
    two or more images, two different images of it uniformly, a negative label uniformly among
    the other labels and one of its images uniformly."""
    groups = _groups(np.asarray(labels))
    anchors = [k for k, g in groups.items() if len(g) >= 2]
    if not anchors or len(groups) < 2:
        raise ValueError("random triplets need a label with 2 images and at least 2 labels")
    keys = sorted(groups)
    out = np.empty((n, 3), dtype=np.int64)
    for t in range(n):
        label = anchors[rng.integers(len(anchors))]
        a, p = rng.choice(groups[label], size=2, replace=False)
        j = int(rng.integers(len(keys) - 1))  # uniform over the labels other than `label`
        other = keys[j if j < keys.index(label) else j + 1]
        out[t] = (a, p, rng.choice(groups[other]))
    return out


def pk_batches(
    labels: np.ndarray, p: int, k: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """One epoch of P x K batches over `labels` (N,): the labels with two or more images, in a
    random order, `p` per batch (the last batch may have fewer), each with `k` of its images
    drawn without replacement (all of them when it has fewer). Yields index arrays."""
    groups = {key: g for key, g in _groups(np.asarray(labels)).items() if len(g) >= 2}
    if len(groups) < 2:
        raise ValueError("P x K batches need at least 2 labels with 2 or more images")
    keys = sorted(groups)
    order = [keys[i] for i in rng.permutation(len(keys))]
    for start in range(0, len(order), p):
        chosen = order[start : start + p]
        if len(chosen) < 2:  # a batch of one label has no negatives
            break
        yield np.concatenate(
            [rng.choice(groups[c], size=min(k, len(groups[c])), replace=False) for c in chosen]
        )


# ----------------------------------------------------------------------------------------------
# images and embeddings inside a worker


class LabelImages:
    """Images of a labelled set as model input: `eval_batch` (bilinear resize to size x size,
    cached as uint8 per worker up to `cache_bytes`: evaluation sets are embedded every epoch) and
    `train_batch` (the project's random train transform)."""

    def __init__(
        self,
        paths: list[str],
        size: int,
        train_resize: int,
        train_crop: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        cache_bytes: int = 2**31,
    ) -> None:
        self.paths = paths
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self.size = size
        self.train_resize = train_resize
        self.transform = train_transform(train_resize, train_crop, mean, std)
        self.mean, self.std = mean, std
        self.cache: dict[int, np.ndarray] = {}

    def _array(self, i: int) -> np.ndarray:
        if i in self.cache:
            return self.cache[i]
        arr = load_eval_array(self.paths[i], self.size)
        if self.cached_bytes + arr.nbytes <= self.cache_bytes:
            self.cache[i] = arr
            self.cached_bytes += arr.nbytes
        return arr

    def eval_batch(self, idx: list[int]) -> torch.Tensor:
        """(n, 3, size, size) normalised tensors."""
        return normalise(np.stack([self._array(i) for i in idx]), self.mean, self.std)

    def train_batch(self, idx: list[int]) -> torch.Tensor:
        """(n, 3, crop, crop) randomly transformed tensors."""
        return torch.stack(
            [self.transform(open_image(self.paths[i], draft_size=self.train_resize)) for i in idx]
        )


def seeded_backbone(config: LabelRunConfig, paths: list[str]) -> tuple[nn.Module, LabelImages]:
    """A label job's backbone, built after seeding torch with `seed` (any new layer is the same
    on every worker) with `model.weights` loaded, and the loader of `paths` at the backbone's
    input size and normalisation."""
    from drawmatch.models.backbones import backbone_spec, create_backbone, load_weights

    torch.manual_seed(config.seed)
    backbone = create_backbone(config.model.backbone, config.model.pretrained, config.model.pooling)
    if config.model.weights:
        load_weights(backbone, config.model.weights)
    images = LabelImages(
        paths,
        config.model.image_size or backbone_spec(config.model.backbone).input_size,
        config.train_resize,
        config.train_crop,
        backbone.mean,
        backbone.std,
    )
    return backbone, images


@torch.no_grad()
def embed_all(
    net: nn.Module,
    images: LabelImages,
    idx: list[int],
    batch_size: int,
    device: torch.device,
    normalised: bool = True,
) -> torch.Tensor:
    """Eval features (n, D) of images `idx` (L2-normalised unless `normalised=False`), each
    worker embedding `idx[rank::world]`, gathered so that every worker gets all of them in the
    order of `idx`. A collective: every worker calls it."""
    from drawmatch.training.distributed import all_gather_no_grad, world

    rank, size = world()
    mine = idx[rank::size]
    was_training = net.training
    net.eval()
    parts = []
    for s in range(0, len(mine), batch_size):
        x = images.eval_batch(mine[s : s + batch_size]).to(device)
        f = net(x).float()
        parts.append(nn.functional.normalize(f, dim=1) if normalised else f)
    net.train(was_training)
    dim = int(getattr(net, "dim", 0)) or (parts[0].shape[1] if parts else 0)
    local = torch.cat(parts) if parts else torch.zeros((0, dim), device=device)
    gathered = all_gather_no_grad(local).cpu()
    order = [j for r in range(size) for j in range(r, len(idx), size)]
    result = torch.empty_like(gathered)
    result[torch.tensor(order, dtype=torch.long)] = gathered
    return result

"""Job configuration, in one place: the frozen dataclasses of every job (one per concern; their
defaults are the one default config), and how a config is built from them, a YAML file and
`key=value` overrides (`embed.batch_size=8` style dotted keys).

Unknown keys, values of the wrong type and values out of range are `ConfigError`s raised before any
work starts. Each run saves its resolved config as YAML next to its outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from drawmatch import storage

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _check_value(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples become lists), for YAML and Ray boundaries."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=x"]` -> `{"a": {"b": 3}, "c": "x"}`; values are parsed as YAML scalars."""
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        _set_dotted(data, key, yaml.safe_load(raw) if raw != "" else None)
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Build a `cls` config from defaults, an optional `base` dict, a YAML file and overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        text = storage.read_text(path)
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(list(overrides or [])))
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (a local path or a URI)."""
    storage.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


STYLES = ("oil", "watercolor", "texture", "gray", "pencil")


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class RayConfig:
    """How a job reaches Ray. `address=None` joins a running cluster (RAY_ADDRESS, `ray start`) or
    starts a local instance; `num_cpus` only applies to a local instance this job starts.
    `autoscaling`: the cluster adds nodes on demand (Ray autoscaler, KubeRay), so a job that asks
    for more CPUs or GPUs than are up now waits for them; otherwise it is refused up front, since
    it would wait forever."""

    address: str | None = None
    num_cpus: int | None = None
    autoscaling: bool = False


@dataclass(frozen=True)
class IngestConfig:
    out: str = "drawmatch-out"
    drawings_root: str | None = None
    artworks_root: str | None = None
    artworks_metadata_csv: str | None = None
    country_aliases_csv: str | None = None
    overrides_csv: str | None = None
    extensions: tuple[str, ...] = (
        ".jpg",
        ".jpeg",
        ".png",
        ".tif",
        ".tiff",
        ".bmp",
        ".webp",
        ".gif",
    )
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class StyleParams:
    """OpenCV parameters of the style effects (thesis sec. 5.2.2; report values where report and
    code differ, pencil from the code)."""

    oil_size: int = 7
    oil_dyn_ratio: int = 1
    watercolor_sigma_s: float = 60.0
    watercolor_sigma_r: float = 0.6
    texture_sigma_s: float = 60.0
    texture_sigma_r: float = 0.4
    pencil_blur_ksize: int = 101
    pencil_scale: float = 256.0


@dataclass(frozen=True)
class AugmentConfig:
    out: str = "drawmatch-out"
    styles: tuple[str, ...] = STYLES
    params: StyleParams = field(default_factory=StyleParams)
    select: str = "paired"
    pairs_csv: str | None = None
    max_side: int = 1024
    jpeg_quality: int = 92
    batch_size: int = 4
    concurrency: int | None = None
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _choice("select", self.select, ("paired", "drawings", "all"))
        for style in self.styles:
            _choice("styles", style, STYLES)


@dataclass(frozen=True)
class ModelConfig:
    """A backbone from the registry; `weights` is a fine-tuned checkpoint file or null."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int = 280
    pooling: str = "avg"
    weights: str | None = None

    def __post_init__(self) -> None:
        _choice("model.pooling", self.pooling, ("avg", "max", "gem"))
        if self.image_size < 32:
            raise ConfigError(f"model.image_size: {self.image_size} is too small (>= 32)")


@dataclass(frozen=True)
class EmbedConfig:
    out: str = "drawmatch-out"
    model: ModelConfig = field(default_factory=ModelConfig)
    collections: tuple[str, ...] = ("drawing", "artwork")
    include_styled: bool = False
    batch_size: int = 4
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    decode_batch_size: int = 8
    decode_cpus: float = 0.5
    decode_concurrency: int | None = None
    rows_per_file: int = 256
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class IndexConfig:
    out: str = "drawmatch-out"
    model_tag: str | None = None
    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128

    def __post_init__(self) -> None:
        _choice("kind", self.kind, ("flat", "ivf", "hnsw"))


@dataclass(frozen=True)
class SearchConfig:
    out: str = "drawmatch-out"
    model_tag: str | None = None
    query: str | None = None
    k: int = 10
    where: dict[str, str] = field(default_factory=dict)
    batch: bool = False
    batch_output: str | None = None
    ray: RayConfig = field(default_factory=RayConfig)
    mode: str = "global"
    region: RegionSearchParams = field(default_factory=lambda: RegionSearchParams())


@dataclass(frozen=True)
class EvaluateConfig:
    out: str = "drawmatch-out"
    model_tag: str | None = None
    pairs_csv: str | None = None
    split_csv: str | None = None
    split_set: str | None = None
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 400)
    output: str | None = None
    folds: bool = False
    runs: str = "*"
    mode: str = "global"
    region: RegionSearchParams = field(default_factory=lambda: RegionSearchParams())

    def __post_init__(self) -> None:
        if self.split_set is not None:
            _choice("split_set", self.split_set, ("train", "val", "test"))


@dataclass(frozen=True)
class DemoConfig:
    out: str = "drawmatch-demo"
    data: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int = 280
    batch_size: int = 4
    styles: tuple[str, ...] = STYLES
    examples: int = 4
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class SplitConfig:
    """Artwork-disjoint folds: connected components of the pair graph, assigned train/val/test by
    the fractions below (thesis sec. 5.1.1: 60/25/15, 11 folds); fold k uses seed `seed + k`."""

    out: str = "drawmatch-out"
    pairs_csv: str | None = None
    n_folds: int = 11
    seed: int = 0
    train: float = 0.6
    val: float = 0.25
    test: float = 0.15
    include_styled: bool = True

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"train, val, test: {self.train}, {self.val}, {self.test} must be >= 0 and sum to 1"
            )
        if self.n_folds < 1:
            raise ConfigError(f"n_folds: {self.n_folds} must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Triplet fine-tuning on one fold (thesis sec. 5.1-5.4; report values as defaults)."""

    out: str = "drawmatch-out"
    fold_csv: str | None = None
    run_name: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "triplet"
    margin: float = 0.7
    lr: float = 1e-6
    weight_decay: float = 1e-4
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    epochs: int = 10
    batch_size: int = 4
    n_hardest: int = 10
    bank_refresh_steps: int = 0
    use_styles: bool = True
    train_resize: int = 330
    train_crop: int = 280
    batchnorm: str = "frozen"
    patience: int = 3
    max_steps_per_epoch: int | None = None
    eval_batch_size: int = 16
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _choice("loss", self.loss, ("triplet", "contrastive"))
        _choice("batchnorm", self.batchnorm, ("frozen", "sync"))
        if self.train_crop > self.train_resize:
            raise ConfigError("train_crop must not exceed train_resize")
        for key in ("epochs", "batch_size", "n_hardest", "num_workers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1")


@dataclass(frozen=True)
class SweepConfig:
    """A two-stage sweep (see `drawmatch.sweep`): the lists are the values searched, `base` the
    train settings every trial shares (its fold_csv and run_name are set per trial)."""

    out: str = "drawmatch-out"
    name: str = "sweep"
    base: TrainConfig = field(default_factory=TrainConfig)
    margins: tuple[float, ...] = (0.7, 1.0)
    lrs: tuple[float, ...] = (1e-6, 1e-4)
    backbones: tuple[str, ...] = ("resnext101_32x8d",)
    use_styles: tuple[bool, ...] = (True,)
    n_hardest: tuple[int, ...] = (10,)
    screen_fold: int = 0
    max_folds: int | None = None
    top_k: int = 2
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int = 1
    trial_cpus: float = 0.1
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        for key in ("margins", "lrs", "backbones", "use_styles", "n_hardest"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: give at least one value")
        if self.top_k < 1:
            raise ConfigError("top_k must be >= 1")


SEARCH_MODES = ("global", "region", "fused", "verified")


@dataclass(frozen=True)
class RegionSearchParams:
    """Region search settings of search and evaluate (see `drawmatch.region_search`), used by
    their `mode`: global (the whole-image embedding only), region (best region of each artwork),
    fused (global + weight * max(0, region - global - margin)) or verified (fused, then the
    `verify_top` best candidates checked with local features and RANSAC; `min_inliers` or more
    inliers put a candidate first, by inlier count). `n_hits` region vectors are read from an
    approximate index per query."""

    weight: float = 1.0
    margin: float = 0.05
    n_hits: int = 2000
    candidates: int = 100
    verify_top: int = 50
    min_inliers: int = 15
    ratio: float = 0.8

    def __post_init__(self) -> None:
        if self.weight < 0 or self.n_hits < 1 or self.candidates < 1 or self.verify_top < 0:
            raise ConfigError("region: weight >= 0, n_hits >= 1, candidates >= 1, verify_top >= 0")


@dataclass(frozen=True)
class RegionsConfig:
    """The regions job: region embeddings of the artworks at `region_size` px (`levels` windows
    per side, neighbours overlapping by `overlap`), their index (`index_kind` flat, ivf, ivfpq or hnsw)
    and local features for verification (`local_features` sift, orb or null)."""

    out: str = "drawmatch-out"
    model_tag: str | None = None
    region_size: int = 448
    levels: tuple[int, ...] = (1, 2, 3)
    overlap: float = 0.4
    index_kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    pq_m: int = 64
    hnsw_m: int = 32
    ef_search: int = 128
    local_features: str | None = "sift"
    feature_side: int = 400
    n_features: int = 500
    batch_size: int = 4
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    decode_batch_size: int = 8
    decode_cpus: float = 0.5
    rows_per_file: int = 64
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _choice("index_kind", self.index_kind, ("flat", "ivf", "ivfpq", "hnsw"))
        if self.local_features is not None:
            _choice("local_features", self.local_features, ("sift", "orb"))
        if not self.levels or min(self.levels) < 1:
            raise ConfigError("levels: give windows per side, each >= 1")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap: {self.overlap} must be in [0, 1)")
        if self.region_size < 32:
            raise ConfigError(f"region_size: {self.region_size} is too small (>= 32)")

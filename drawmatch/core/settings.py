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

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key, or gives a value of the wrong type or out
    of its range."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                pass
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
    except ConfigError as exc:  # a range check of a nested section: name its full key
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None
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
        from drawmatch.core import storage

        try:
            text = storage.read_text(path)
        except FileNotFoundError:
            raise ConfigError(f"--config {path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--config {path}: cannot be read ({exc})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"--config {path}: not valid YAML{at}: {problem}") from None
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: a config file must be a mapping of keys to values")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(list(overrides or [])))
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (a local path or a URI)."""
    from drawmatch.core import storage

    storage.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


STYLES = ("oil", "watercolor", "texture", "gray", "pencil")
# Effects that turn an artwork into a "drawn" pseudo-anchor (drawmatch.training.pseudo_pairs): the five styles,
# line drawings and colour quantisation.
PSEUDO_EFFECTS = ("oil", "watercolor", "texture", "gray", "pencil", "edges", "quantise")


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def choice(default: Any, *allowed: str) -> Any:
    """A field whose value (each value, for a list) must be one of `allowed`; `--help` lists
    them. A null value of an optional field passes."""
    return field(default=default, metadata={"choices": allowed})


def _check_choices(config: Any) -> None:
    for f in dataclasses.fields(config):
        allowed = f.metadata.get("choices")
        value = getattr(config, f.name)
        if allowed is None or value is None:
            continue
        if isinstance(value, tuple):
            _each(f.name, value, _choice, allowed)
        else:
            _choice(f.name, value, allowed)


def _at_least(key: str, value: float | None, minimum: float) -> None:
    """`value >= minimum` (None, where a key allows it, means "not set" and passes)."""
    if value is not None and not value >= minimum:  # `not >=` also refuses NaN
        raise ConfigError(f"{key}: {value!r} is out of range (must be >= {minimum:g})")


def _above(key: str, value: float | None, minimum: float) -> None:
    """`value > minimum` (None passes)."""
    if value is not None and not value > minimum:
        raise ConfigError(f"{key}: {value!r} is out of range (must be > {minimum:g})")


def _between(key: str, value: float, low: float, high: float) -> None:
    """`low <= value <= high`."""
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is out of range (must be {low:g} to {high:g})")


def _each(key: str, values: tuple[Any, ...], check: Any, *args: Any) -> None:
    """Apply a check to every item of a list key, and refuse an empty list."""
    if not values:
        raise ConfigError(f"{key}: give at least one value")
    for i, value in enumerate(values):
        check(f"{key}[{i}]", value, *args)


def _train_crop(crop: int, resize: int) -> None:
    """Training crops: at least MIN_IMAGE_SIZE and within the resized image they are cut from."""
    _at_least("train_crop", crop, MIN_IMAGE_SIZE)
    if crop > resize:
        raise ConfigError(f"train_crop: {crop} must not exceed train_resize ({resize})")


def _not_empty(key: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise ConfigError(f"{key}: an empty value is not allowed (leave the key out instead)")


MIN_IMAGE_SIZE = 32  # smaller inputs vanish in the backbones' five stride-2 stages


def _names(obj: Any, *keys: str) -> None:
    """Path and name keys: when given, not empty (an empty `out=` would write into the current
    folder)."""
    for key in keys:
        _not_empty(key, getattr(obj, key))


def _folder_name(key: str, value: str | None) -> None:
    """A name that becomes one folder under `out` (a run or sweep name)."""
    _not_empty(key, value)
    if value is not None and ("/" in value or "\\" in value or value.strip() in (".", "..")):
        raise ConfigError(f"{key}: {value!r} must be a plain name, not a path")


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

    def __post_init__(self) -> None:
        _names(self, "address")
        _at_least("num_cpus", self.num_cpus, 1)


@dataclass(frozen=True)
class IngestConfig:
    """Catalogue the images under `drawings_root` and `artworks_root` (files whose extension is in
    `extensions`), with optional artwork metadata, country aliases and per-file overrides (CSV)."""

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

    def __post_init__(self) -> None:
        _names(
            self,
            "out",
            "drawings_root",
            "artworks_root",
            "artworks_metadata_csv",
            "country_aliases_csv",
            "overrides_csv",
        )
        _each("extensions", self.extensions, _not_empty)
        _at_least("max_image_pixels", self.max_image_pixels, 1)


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

    def __post_init__(self) -> None:
        _at_least("oil_size", self.oil_size, 1)
        _at_least("oil_dyn_ratio", self.oil_dyn_ratio, 1)
        # OpenCV's documented ranges of the edge-preserving filters: sigma_s 0-200, sigma_r 0-1
        for effect in ("watercolor", "texture"):
            _between(f"{effect}_sigma_s", getattr(self, f"{effect}_sigma_s"), 0.0, 200.0)
            _between(f"{effect}_sigma_r", getattr(self, f"{effect}_sigma_r"), 0.0, 1.0)
        _at_least("pencil_blur_ksize", self.pencil_blur_ksize, 1)
        if self.pencil_blur_ksize % 2 == 0:
            raise ConfigError(f"pencil_blur_ksize: {self.pencil_blur_ksize} must be odd")
        _above("pencil_scale", self.pencil_scale, 0)


NEURAL = "neural"  # the style-transfer effect of the augment job (drawmatch.augment.neural_style)
NEURAL_REFERENCES = ("auto", "drawing", "artwork")


@dataclass(frozen=True)
class NeuralStyleParams:
    """Neural style transfer (drawmatch.augment.neural_style): `steps` of `optimizer` (adam or lbfgs) at
    learning rate `lr` on images whose longer side is `size`, features of `backbone`;
    loss = content_weight * content + style_weight * style + tv_weight * total variation;
    `content_layer` and `style_layers` null: the backbone's defaults; `init_noise` (pixel std,
    0-1) of noise drawn from `seed` added to the starting image."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    size: int = 256
    steps: int = 150
    optimizer: str = choice("adam", "adam", "lbfgs")
    lr: float = 0.05
    content_weight: float = 1.0
    style_weight: float = 1000.0
    tv_weight: float = 1.0
    content_layer: str | None = None
    style_layers: tuple[str, ...] | None = None
    init_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _names(self, "backbone", "content_layer")
        _check_choices(self)
        _at_least("size", self.size, MIN_IMAGE_SIZE)
        _at_least("steps", self.steps, 1)
        _above("lr", self.lr, 0)
        for key in ("content_weight", "style_weight", "tv_weight"):
            _at_least(key, getattr(self, key), 0)
        if self.content_weight == 0 and self.style_weight == 0:
            raise ConfigError("content_weight, style_weight: at least one must be > 0")
        if self.style_layers is not None:
            _each("style_layers", self.style_layers, _not_empty)
        _between("init_noise", self.init_noise, 0.0, 1.0)
        _at_least("seed", self.seed, 0)


@dataclass(frozen=True)
class AugmentConfig:
    """Write style copies (`styles`) of the selected originals: `select=paired` the drawings of
    `pairs_csv`, `drawings` every usable drawing, `all` drawings and artworks. The `neural` style
    (not in the default list: about a second per optimisation step on CPU) renders each image in
    the style of a reference image chosen by `neural_reference`: `auto` a drawing's paired artwork
    (a random artwork if it has none or pairs_csv is not given) and an artwork a random drawing;
    `drawing` or `artwork` a random image of that collection (seeded by `neural.seed`)."""

    out: str = "drawmatch-out"
    styles: tuple[str, ...] = choice(STYLES, *STYLES, NEURAL)
    params: StyleParams = field(default_factory=StyleParams)
    neural: NeuralStyleParams = field(default_factory=NeuralStyleParams)
    neural_reference: str = choice("auto", *NEURAL_REFERENCES)
    select: str = choice("paired", "paired", "drawings", "all")
    pairs_csv: str | None = None
    max_side: int = 1024
    jpeg_quality: int = 92
    batch_size: int = 4
    concurrency: int | None = None
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _names(self, "out", "pairs_csv")
        _check_choices(self)
        _at_least("max_side", self.max_side, MIN_IMAGE_SIZE)
        _between("jpeg_quality", self.jpeg_quality, 1, 100)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("concurrency", self.concurrency, 1)
        _at_least("max_image_pixels", self.max_image_pixels, 1)


@dataclass(frozen=True)
class ModelConfig:
    """A backbone from the registry (`drawmatch models` lists them); `weights` is a fine-tuned
    checkpoint file or null. `image_size` null: the backbone's own input size; `pooling` null: its
    default pooling (CNNs: avg, max or gem; vision transformers: cls or avg, the mean of the patch
    tokens)."""

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int | None = None
    pooling: str | None = choice(None, "avg", "max", "gem", "cls")
    weights: str | None = None
    runtime: str = choice("torch", "torch", "onnx")  # runs the forward: torch or onnxruntime

    def __post_init__(self) -> None:
        _names(self, "backbone", "weights")
        _check_choices(self)
        _at_least("image_size", self.image_size, MIN_IMAGE_SIZE)


@dataclass(frozen=True)
class EmbedConfig:
    """Embed the catalogue images of `collections` with `model`: CPU decode tasks feed
    `num_actors` embedding actors; parts of `rows_per_file` rows go to `embeddings/<model_tag>/`."""

    out: str = "drawmatch-out"
    model: ModelConfig = field(default_factory=ModelConfig)
    collections: tuple[str, ...] = choice(("drawing", "artwork"), "drawing", "artwork")
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
    # nice level of decode tasks and embedding actors (Ray starts workers at 15); null keeps Ray's
    nice: int | None = 0
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _names(self, "out")
        _check_choices(self)
        for key in ("batch_size", "num_actors", "decode_batch_size", "rows_per_file"):
            _at_least(key, getattr(self, key), 1)
        # a task or actor without CPUs is never limited by Ray: it would oversubscribe the node
        _above("cpus_per_actor", self.cpus_per_actor, 0)
        _above("decode_cpus", self.decode_cpus, 0)
        _at_least("gpus_per_actor", self.gpus_per_actor, 0)
        _at_least("decode_concurrency", self.decode_concurrency, 1)
        _at_least("max_image_pixels", self.max_image_pixels, 1)
        if self.nice is not None:
            _between("nice", self.nice, -20, 19)


@dataclass(frozen=True)
class IndexConfig:
    """A FAISS index of the artworks' embeddings: `flat` (exact), `ivf` (`nlist` lists, `nprobe`
    searched) or `hnsw` (`hnsw_m` links per node, `ef_search` candidates)."""

    out: str = "drawmatch-out"
    model_tag: str | None = None
    kind: str = choice("flat", "flat", "ivf", "hnsw")
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128

    def __post_init__(self) -> None:
        _names(self, "out", "model_tag")
        _check_choices(self)
        _at_least("nlist", self.nlist, 1)
        _at_least("nprobe", self.nprobe, 1)
        _at_least("hnsw_m", self.hnsw_m, 2)
        _at_least("ef_search", self.ef_search, 1)


@dataclass(frozen=True)
class SearchConfig:
    """The `k` nearest artworks of `query` (a drawing id or an image file), or of every drawing
    with `batch=true`; `where.<column>=value` keeps only matching artworks."""

    out: str = "drawmatch-out"
    model_tag: str | None = None
    query: str | None = None
    k: int = 10
    where: dict[str, str] = field(default_factory=dict)
    batch: bool = False
    batch_output: str | None = None
    mode: str = "global"
    region: RegionSearchParams = field(default_factory=lambda: RegionSearchParams())
    sheet: str | None = None  # a contact sheet (JPEG) of one query's result, boxes drawn

    def __post_init__(self) -> None:
        _names(self, "out", "model_tag", "query", "batch_output", "sheet")
        _at_least("k", self.k, 1)


@dataclass(frozen=True)
class EvaluateConfig:
    """Retrieval metrics (MP, MMP, Recall@`ks`, MAP) of one model on `pairs_csv` or on one set of
    `split_csv`; with `folds=true`, mean ± std over the train runs matching `runs`."""

    out: str = "drawmatch-out"
    model_tag: str | None = None
    pairs_csv: str | None = None
    split_csv: str | None = None
    split_set: str | None = choice(None, "train", "val", "test")
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 400)
    output: str | None = None
    folds: bool = False
    runs: str = "*"
    mode: str = "global"
    region: RegionSearchParams = field(default_factory=lambda: RegionSearchParams())

    def __post_init__(self) -> None:
        _names(self, "out", "model_tag", "pairs_csv", "split_csv", "output", "runs")
        _check_choices(self)
        _each("ks", self.ks, _at_least, 1)


@dataclass(frozen=True)
class DemoConfig:
    """The whole pipeline (ingest, augment, embed, index, evaluate) on the bundled demo data, or
    on `data` (a folder with drawings/, artworks/, artworks.csv, pairs.csv)."""

    out: str = "drawmatch-demo"
    data: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int | None = None  # null: the backbone's own input size
    batch_size: int = 4
    styles: tuple[str, ...] = choice(STYLES, *STYLES)
    examples: int = 4
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _names(self, "out", "data", "backbone")
        _at_least("image_size", self.image_size, MIN_IMAGE_SIZE)
        _at_least("batch_size", self.batch_size, 1)
        _check_choices(self)
        _at_least("examples", self.examples, 1)


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
        _names(self, "out", "pairs_csv")
        for key in ("train", "val", "test"):
            _between(key, getattr(self, key), 0.0, 1.0)
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError(
                f"train, val, test: {self.train}, {self.val}, {self.test} must sum to 1"
            )
        _at_least("n_folds", self.n_folds, 1)
        _at_least("seed", self.seed, 0)


@dataclass(frozen=True)
class TrainConfig:
    """Triplet fine-tuning on one fold (thesis sec. 5.1-5.4; report values as defaults)."""

    out: str = "drawmatch-out"
    fold_csv: str | None = None
    run_name: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = choice("triplet", "triplet", "contrastive", "multi_similarity", "supcon")
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
    batchnorm: str = choice("frozen", "frozen", "sync")
    patience: int = 3
    max_steps_per_epoch: int | None = None
    eval_batch_size: int = 16
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)
    # Fine-tuning that holds on unseen data (see drawmatch.jobs.train): multi-positive losses, extra
    # positives per anchor, partial freezing, L2-SP, schedule, model selection, pseudo-pairs.
    temperature: float = 0.1
    positives_per_anchor: int = 1
    train_blocks: int = 0
    l2sp: float = 0.0
    lr_schedule: str = choice("step", "step", "cosine")
    selection: str = choice("val", "val", "last")
    pseudo_epochs: int = 0
    pseudo_effects: tuple[str, ...] = choice(PSEUDO_EFFECTS, *PSEUDO_EFFECTS)
    pseudo_detail_share: float = 0.3
    pseudo_min_crop: float = 0.4
    pseudo_warp: float = 0.08

    def __post_init__(self) -> None:
        _names(self, "out", "fold_csv")
        _folder_name("run_name", self.run_name)
        _above("temperature", self.temperature, 0)
        _at_least("positives_per_anchor", self.positives_per_anchor, 1)
        _at_least("train_blocks", self.train_blocks, 0)  # 0: every block trains
        _at_least("l2sp", self.l2sp, 0)
        _at_least("pseudo_epochs", self.pseudo_epochs, 0)
        # epochs=0 with pseudo_epochs > 0: a pseudo-pair stage alone, whose weights later runs
        # start from (model.weights)
        _at_least("epochs", self.epochs, 0 if self.pseudo_epochs else 1)
        if not self.pseudo_effects:
            raise ConfigError("pseudo_effects: give at least one value")
        _between("pseudo_detail_share", self.pseudo_detail_share, 0, 1)
        _between("pseudo_min_crop", self.pseudo_min_crop, 0.1, 1)
        _between("pseudo_warp", self.pseudo_warp, 0, 0.3)
        _check_choices(self)
        _above("margin", self.margin, 0)
        _above("lr", self.lr, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _above("lr_gamma", self.lr_gamma, 0)
        for key in (
            "lr_step_epochs",
            "batch_size",
            "n_hardest",
            "patience",
            "max_steps_per_epoch",
            "eval_batch_size",
            "num_workers",
        ):
            _at_least(key, getattr(self, key), 1)
        _at_least("bank_refresh_steps", self.bank_refresh_steps, 0)  # 0: once per epoch
        _train_crop(self.train_crop, self.train_resize)
        _above("cpus_per_worker", self.cpus_per_worker, 0)
        _at_least("max_failures", self.max_failures, -1)  # -1: retry forever (Ray Train)
        _at_least("seed", self.seed, 0)


@dataclass(frozen=True)
class SweepConfig:
    """A two-stage sweep (see `drawmatch.workflows.sweep`): the lists are the values searched, `base` the
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
    # Searched fine-tuning keys (see TrainConfig); the best configuration is the one with the
    # best validation MAP pooled over the folds' queries.
    losses: tuple[str, ...] = choice(
        ("triplet",), "triplet", "contrastive", "multi_similarity", "supcon"
    )
    l2sp: tuple[float, ...] = (0.0,)
    train_blocks: tuple[int, ...] = (0,)
    pseudo_epochs: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        _names(self, "out")
        _folder_name("name", self.name)
        _check_choices(self)
        _each("l2sp", self.l2sp, _at_least, 0)
        _each("train_blocks", self.train_blocks, _at_least, 0)
        _each("pseudo_epochs", self.pseudo_epochs, _at_least, 0)
        _each("margins", self.margins, _above, 0)
        _each("lrs", self.lrs, _above, 0)
        _each("backbones", self.backbones, _not_empty)
        if not self.use_styles:
            raise ConfigError("use_styles: give at least one value")
        _each("n_hardest", self.n_hardest, _at_least, 1)
        _at_least("screen_fold", self.screen_fold, 0)
        for key in ("max_folds", "top_k", "grace_period", "max_concurrent_trials"):
            _at_least(key, getattr(self, key), 1)
        if self.grace_period > self.base.epochs:
            raise ConfigError(
                f"grace_period: {self.grace_period} exceeds base.epochs ({self.base.epochs})"
            )
        _at_least("reduction_factor", self.reduction_factor, 2)
        _at_least("trial_cpus", self.trial_cpus, 0)  # 0: a trial's driver holds no CPU


@dataclass(frozen=True)
class ReportConfig:
    """A static HTML report of what the jobs wrote under `out`: `output/index.html` with its
    images beside it (default `output`: `out/report`).

    `model_tags`: the models compared (empty: every model with embeddings); `drawings`: the
    drawings of the qualitative sheets (empty: `examples` annotated drawings drawn with `seed`);
    `pairs_csv`: the annotations shown (default: the pairs file of the models' evaluations);
    `review_model`: the model whose closest unannotated pairs are listed for review (default:
    the best by MAP)."""

    out: str = "drawmatch-out"
    output: str | None = None
    model_tags: tuple[str, ...] = ()
    drawings: tuple[str, ...] = ()
    pairs_csv: str | None = None
    examples: int = 6
    seed: int = 0
    top_k: int = 10
    samples_per_age_group: int = 6
    top_countries: int = 30
    review_candidates: int = 24
    review_model: str | None = None
    thumb_size: int = 220

    def __post_init__(self) -> None:
        _names(self, "out", "output", "pairs_csv", "review_model")
        for key in ("examples", "samples_per_age_group", "review_candidates"):
            _at_least(key, getattr(self, key), 0)
        for key in ("top_k", "top_countries"):
            _at_least(key, getattr(self, key), 1)
        _between("thumb_size", self.thumb_size, MIN_IMAGE_SIZE, 1024)


@dataclass(frozen=True)
class ServeConfig:
    """The experts' workbench (`drawmatch serve`): a web app over one output root.

    `host` is 127.0.0.1 unless told otherwise; any other address is a shared deployment and
    needs `tokens_csv` (`annotator,token` lines): then annotators sign in with a token instead of
    typing a name. `model_tag`: the model a page shows first (default: the first one found).
    """

    out: str = "drawmatch-out"
    host: str = "127.0.0.1"
    port: int = 8000
    model_tag: str | None = None
    k: int = 12
    page_size: int = 60
    tokens_csv: str | None = None
    max_upload_bytes: int = 15_000_000
    max_upload_pixels: int = 60_000_000
    max_image_pixels: int = 200_000_000
    thumb_size: int = 256
    view_size: int = 1024
    load_model: bool = True
    log_level: str = "info"

    def __post_init__(self) -> None:
        _choice("log_level", self.log_level, ("critical", "error", "warning", "info", "debug"))
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: {self.port} is not a TCP port (0-65535)")
        if self.host not in ("127.0.0.1", "localhost", "::1") and self.tokens_csv is None:
            raise ConfigError(
                f"host: serving on {self.host!r} is a shared deployment; give tokens_csv= "
                "(annotator,token lines) so that annotators sign in with a token"
            )
        for key in ("k", "page_size", "max_upload_bytes", "max_upload_pixels", "thumb_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: {getattr(self, key)} must be >= 1")
        if not 1 <= self.k <= 200:
            raise ConfigError(f"k: {self.k} must be between 1 and 200")
        if not 1 <= self.page_size <= 500:
            raise ConfigError(f"page_size: {self.page_size} must be between 1 and 500")
        if not 32 <= self.thumb_size <= self.view_size <= 4096:
            raise ConfigError(
                "thumb_size and view_size: need 32 <= thumb_size <= view_size <= 4096"
            )


@dataclass(frozen=True)
class ThumbnailsConfig:
    """Thumbnails and view-size renditions of every showable image (never versos), written once
    under `out/thumbnails/` by Ray Data tasks; `drawmatch serve` reads them (and makes missing
    ones on demand). A rerun makes only what is missing."""

    out: str = "drawmatch-out"
    sizes: tuple[int, ...] = (256, 1024)
    quality: int = 85
    collections: tuple[str, ...] = ("drawing", "artwork")
    batch_size: int = 16
    concurrency: int | None = None
    max_image_pixels: int = 200_000_000
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        for size in self.sizes:
            if not 32 <= size <= 4096:
                raise ConfigError(f"sizes: {size} must be between 32 and 4096")
        for collection in self.collections:
            _choice("collections", collection, ("drawing", "artwork"))
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality: {self.quality} must be between 1 and 100")


@dataclass(frozen=True)
class SimilarConfig:
    """Drawing-to-drawing neighbours of one model (thesis sec. 3.3.4): for every searchable
    drawing its `k` closest drawings, and for every artwork its `k` closest drawings, written to
    `similar/<model_tag>/` for the workbench."""

    out: str = "drawmatch-out"
    model_tag: str | None = None
    k: int = 12
    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128
    chunk: int = 2048

    def __post_init__(self) -> None:
        _choice("kind", self.kind, ("flat", "ivf", "hnsw"))
        if not 1 <= self.k <= 1000:
            raise ConfigError(f"k: {self.k} must be between 1 and 1000")
        if self.chunk < 1:
            raise ConfigError(f"chunk: {self.chunk} must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """Annotated pairs out of the workbench's `annotations.sqlite`: the pairs whose latest
    decision is `match`, in the pairs CSV contract that `split` and `train` read."""

    out: str = "drawmatch-out"
    output: str | None = None
    annotators: tuple[str, ...] = ()


SEARCH_MODES = ("global", "region", "fused", "verified")


@dataclass(frozen=True)
class RegionSearchParams:
    """Region search settings of search and evaluate (see `drawmatch.retrieval.region_search`), used by
    their `mode`: global (the whole-image embedding only), region (best region of each artwork),
    fused (global + weight * max(0, region - global - margin)) or verified (fused, then the
    `verify_top` best candidates checked with local features and RANSAC; `min_inliers` or more
    inliers put a candidate first, by inlier count). `n_hits` region vectors are read from an
    approximate index per query. The query's SIFT features are extracted at `query_feature_side`
    px with at most `query_n_features` keypoints (the artworks' are the regions job's
    `feature_side` and `n_features`) and matched as RootSIFT when `rootsift` is true."""

    weight: float = 1.0  # weight, margin and min_inliers tuned on a held-out partial-copy set
    margin: float = 0.02
    n_hits: int = 2000
    verify_top: int = 500  # a gallery of up to 500 artworks is verified whole
    min_inliers: int = 5
    ratio: float = 0.8
    rootsift: bool = True  # match SIFT descriptors as RootSIFT (Hellinger distance)
    query_feature_side: int = 400  # the query's local features: longer side in px, keypoints
    query_n_features: int = 500

    def __post_init__(self) -> None:
        _at_least("weight", self.weight, 0)
        _between("margin", self.margin, -2.0, 2.0)
        _at_least("n_hits", self.n_hits, 1)
        _at_least("verify_top", self.verify_top, 0)
        _at_least("min_inliers", self.min_inliers, 3)
        _between("ratio", self.ratio, 0.01, 1.0)
        _at_least("query_feature_side", self.query_feature_side, 32)
        _at_least("query_n_features", self.query_n_features, 1)


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
    feature_side: int = 800  # artworks' local features: longer side in px (small ones scaled up)
    n_features: int = 2000
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
        _names(self, "out", "model_tag")
        _at_least("region_size", self.region_size, MIN_IMAGE_SIZE)
        for key in ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_search", "n_features"):
            _at_least(key, getattr(self, key), 1)
        _at_least("feature_side", self.feature_side, 32)
        for key in ("batch_size", "num_actors", "decode_batch_size", "rows_per_file"):
            _at_least(key, getattr(self, key), 1)
        _above("cpus_per_actor", self.cpus_per_actor, 0)
        _at_least("gpus_per_actor", self.gpus_per_actor, 0)
        _above("decode_cpus", self.decode_cpus, 0)
        _at_least("max_image_pixels", self.max_image_pixels, 1)


# ----------------------------------------------------------------------------------------------
# label-based tasks: artist-style verification and movement classification (drawmatch.training.labels)

LABEL_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class LabelsConfig:
    """A labelled image set: `images` (a folder: one sub-folder per label, cut to `folder_depth`
    levels, or with `labels_csv`) or, without `images`, the catalogue under `out`. `labels_csv`:
    `id_column` names each image (its path under `images`; default `filename`, or the catalogue
    id, default `id`), `label_column` its label (a catalogue column when there is no CSV).
    `label_pattern`: a regular expression whose first group is the label. Labels with fewer than
    `min_per_label` images are dropped (and counted)."""

    images: str | None = None
    labels_csv: str | None = None
    id_column: str | None = None
    label_column: str = "label"
    label_pattern: str | None = None
    folder_depth: int = 1
    min_per_label: int = 2
    extensions: tuple[str, ...] = LABEL_EXTENSIONS

    def __post_init__(self) -> None:
        _names(self, "images", "labels_csv", "id_column", "label_column", "label_pattern")
        _at_least("folder_depth", self.folder_depth, 1)
        _at_least("min_per_label", self.min_per_label, 1)
        _each("extensions", self.extensions, _not_empty)
        if self.label_pattern is not None:
            import re

            try:
                re.compile(self.label_pattern)
            except re.error as exc:
                raise ConfigError(
                    f"label_pattern: {self.label_pattern!r} is not valid ({exc})"
                ) from None


@dataclass(frozen=True)
class VerifyConfig:
    """Artist-style verification (Painter By Numbers): train a backbone on labels instead of
    pairs, with label-disjoint splits (`test_labels` of the labels only in test, `val_images` of
    the training labels' images in validation), random or mined (`triplets`) triplets and a
    triplet or contrastive `loss`; scored by triplet accuracy and ROC AUC of same/different
    pairs on unseen labels. `epochs=0` scores the starting weights only."""

    out: str = "drawmatch-out"
    data: LabelsConfig = field(default_factory=LabelsConfig)
    run_name: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = choice("triplet", "triplet", "contrastive")
    triplets: str = choice("random", "random", "mined")
    margin: float = 0.7
    lr: float = 1e-5
    weight_decay: float = 1e-4
    epochs: int = 5
    steps_per_epoch: int = 50
    batch_size: int = 4
    labels_per_batch: int = 4
    images_per_label: int = 3
    train_resize: int = 330
    train_crop: int = 280
    batchnorm: str = choice("frozen", "frozen", "train")
    test_labels: float = 0.2
    val_images: float = 0.1
    eval_triplets: int = 2000
    max_pair_images: int = 2000
    patience: int = 3
    eval_batch_size: int = 16
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _names(self, "out")
        _folder_name("run_name", self.run_name)
        _check_choices(self)
        _above("margin", self.margin, 0)
        if self.loss == "contrastive" and self.margin > 2:
            raise ConfigError(f"margin: {self.margin} must be <= 2 for the contrastive loss")
        _above("lr", self.lr, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("epochs", self.epochs, 0)
        for key in (
            "steps_per_epoch",
            "batch_size",
            "eval_triplets",
            "patience",
            "eval_batch_size",
            "num_workers",
        ):
            _at_least(key, getattr(self, key), 1)
        _at_least("labels_per_batch", self.labels_per_batch, 2)
        _at_least("images_per_label", self.images_per_label, 2)
        _at_least("max_pair_images", self.max_pair_images, 2)
        _train_crop(self.train_crop, self.train_resize)
        _between("test_labels", self.test_labels, 0.0, 0.9)
        _above("test_labels", self.test_labels, 0)
        _between("val_images", self.val_images, 0.0, 0.9)
        _above("cpus_per_worker", self.cpus_per_worker, 0)
        _at_least("seed", self.seed, 0)


@dataclass(frozen=True)
class ClassifyConfig:
    """Art-movement (or any label) classification on top of a backbone: `method=probe` a linear
    probe on frozen L2-normalised embeddings (computed, or read from the embeddings store of
    `model_tag` for catalogue images), its L2 penalty chosen on validation among `probe_l2`;
    `method=finetune` the backbone and a linear head trained together (cross-entropy, `lr` for
    the backbone, `head_lr` for the head). Stratified splits (`val`, `test` of each label)."""

    out: str = "drawmatch-out"
    data: LabelsConfig = field(default_factory=LabelsConfig)
    run_name: str | None = None
    method: str = choice("probe", "probe", "finetune")
    model: ModelConfig = field(default_factory=ModelConfig)
    model_tag: str | None = None
    val: float = 0.15
    test: float = 0.15
    probe_l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    probe_max_iter: int = 500
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 5
    batch_size: int = 8
    max_steps_per_epoch: int | None = None
    train_resize: int = 330
    train_crop: int = 280
    batchnorm: str = choice("frozen", "frozen", "train")
    patience: int = 3
    eval_batch_size: int = 16
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _names(self, "out", "model_tag")
        _folder_name("run_name", self.run_name)
        _check_choices(self)
        _between("val", self.val, 0.0, 0.9)
        _between("test", self.test, 0.0, 0.9)
        if self.val + self.test >= 1.0:
            raise ConfigError(f"val, test: {self.val} + {self.test} must leave images to train")
        _each("probe_l2", self.probe_l2, _at_least, 0)
        for key in ("probe_max_iter", "epochs", "batch_size", "patience", "eval_batch_size"):
            _at_least(key, getattr(self, key), 1)
        _at_least("max_steps_per_epoch", self.max_steps_per_epoch, 1)
        _at_least("num_workers", self.num_workers, 1)
        _above("lr", self.lr, 0)
        _above("head_lr", self.head_lr, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _train_crop(self.train_crop, self.train_resize)
        _above("cpus_per_worker", self.cpus_per_worker, 0)
        _at_least("seed", self.seed, 0)


@dataclass(frozen=True)
class StylizeConfig:
    """Render the image `content` in the style of the image `style` (neural style transfer,
    `params`) and write the result to `out` (a JPEG or PNG file; an existing file is replaced only
    with overwrite=true)."""

    content: str | None = None
    style: str | None = None
    out: str = "stylized.jpg"
    overwrite: bool = False
    params: NeuralStyleParams = field(default_factory=NeuralStyleParams)
    jpeg_quality: int = 92
    max_image_pixels: int = 200_000_000

    def __post_init__(self) -> None:
        _names(self, "content", "style", "out")  # the extension of `out` is checked by the job
        _between("jpeg_quality", self.jpeg_quality, 1, 100)
        _at_least("max_image_pixels", self.max_image_pixels, 1)

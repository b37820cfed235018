"""The config dataclasses of every job, one per concern. Defaults here are the one default config;
`jobs/configs/*.yaml` and `key=value` overrides change them (see `drawmatch.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drawmatch.config import ConfigError

STYLES = ("oil", "watercolor", "texture", "gray", "pencil")


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class RayConfig:
    """How a job reaches Ray. `address=None` joins a running cluster (RAY_ADDRESS, `ray start`) or
    starts a local instance; `num_cpus` only applies to a local instance this job starts."""

    address: str | None = None
    num_cpus: int | None = None


@dataclass(frozen=True)
class IngestConfig:
    out: str = "drawmatch-out"
    drawings_root: str | None = None
    artworks_root: str | None = None
    artworks_metadata_csv: str | None = None
    country_aliases_csv: str | None = None
    overrides_csv: str | None = None
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
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


@dataclass(frozen=True)
class EvaluateConfig:
    out: str = "drawmatch-out"
    model_tag: str | None = None
    pairs_csv: str | None = None
    split_csv: str | None = None
    split_set: str | None = None
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 400)
    output: str | None = None

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

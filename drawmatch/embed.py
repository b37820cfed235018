"""The embed job: catalogue images -> L2-normalised CNN embeddings in `embeddings/<model_tag>/`.

Ray Data pipeline: CPU tasks decode and resize (`decode_batch`, JPEG scans decoded at reduced size),
an actor pool of `Embedder`s (CPUs or GPUs per actor from the config) turns image batches into
vectors, and `write_part` tasks write them as Parquet files, each atomically. A rerun embeds only the
ids that are missing or whose content changed, so a killed job finishes the rest when run again.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from drawmatch import catalogue as cat
from drawmatch import storage
from drawmatch.settings import save_config
from drawmatch.images import ImageError, open_image
from drawmatch.settings import EmbedConfig, ModelConfig

log = logging.getLogger("drawmatch.embed")

MODEL_FILE = "model.json"
ERRORS_FILE = "errors.csv"


def embeddings_dir(out: str | Path, tag: str) -> str:
    return storage.join(out, "embeddings", tag)


def model_tag(model: ModelConfig, weights_hash: str) -> str:
    """Name of an embedding model: backbone, pooling, input size and weights, e.g.
    `efficientnet_lite0-avg-280-imagenet` or `...-280-ft-<first 8 digits of the weights hash>`."""
    if model.weights:
        weights = f"ft-{weights_hash[:8]}"
    else:
        weights = "imagenet" if model.pretrained else "random"
    return f"{model.backbone}-{model.pooling}-{model.image_size}-{weights}"


def eval_transform(img: Image.Image, size: int) -> np.ndarray:
    """Thesis eval transform, geometric part: bilinear resize to (size, size) -> (size, size, 3) uint8.
    Normalisation (ImageNet mean/std) happens in the `Embedder`."""
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_batch(
    batch: dict[str, np.ndarray], roots: dict[str, str], image_size: int, max_pixels: int
) -> dict[str, np.ndarray]:
    """Decode and resize a batch of catalogue rows (`id`, `root`, `path`, `sha256`).

    Returns the same rows plus `image` (B, size, size, 3) uint8, `ok` (B,) bool and `error` (B,) str;
    a row that fails to decode keeps a black image, ok=False and its reason.
    """
    n = len(batch["id"])
    images = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    errors = np.array([""] * n, dtype=object)
    for i in range(n):
        path = storage.join(roots[str(batch["root"][i])], str(batch["path"][i]))
        try:
            img = open_image(path, draft_size=image_size, max_pixels=max_pixels)
            images[i] = eval_transform(img, image_size)
        except ImageError as exc:
            ok[i] = False
            errors[i] = exc.reason
    return {
        "id": batch["id"],
        "sha256": batch["sha256"],
        "image": images,
        "ok": ok,
        "error": errors,
    }


class Embedder:
    """Callable Ray Data stage: image batches -> L2-normalised embeddings.

    `__call__` takes `image` (B, S, S, 3) uint8 plus `id`, `sha256`, `ok`, `error`, and returns them
    with `embedding` (B, D) float32 (zeros where ok is False) instead of `image`.
    """

    def __init__(self, model: dict[str, Any], num_threads: int | None = None) -> None:
        import torch

        from drawmatch.backbones import create_backbone, load_weights, weights_hash

        if num_threads:
            torch.set_num_threads(num_threads)
        cfg = ModelConfig(**model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = create_backbone(cfg.backbone, pretrained=cfg.pretrained, pooling=cfg.pooling)
        if cfg.weights:
            load_weights(net, cfg.weights)
        self.weights_hash = weights_hash(net)
        self.tag = model_tag(cfg, self.weights_hash)
        self.net = net.eval().to(self.device)
        self.dim = net.dim
        self.mean = torch.tensor(net.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(net.std, device=self.device).view(1, 3, 1, 1)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 -> (B, D) float32, L2-normalised."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.array(images, dtype=np.uint8)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self.mean) / self.std
            feats = self.net(x)
            feats = torch.nn.functional.normalize(feats.float(), dim=1)
        return feats.cpu().numpy().astype(np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], dtype=bool)
        emb = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            emb[ok] = self.embed_images(batch["image"][ok])
        return {
            "id": batch["id"],
            "sha256": batch["sha256"],
            "ok": ok,
            "error": batch["error"],
            "embedding": emb,
        }


def embeddings_table(
    ids: list[str], sha256: list[str], emb: np.ndarray, tag: str, weights_hash: str
) -> pa.Table:
    """Arrow table of the embeddings contract: id, model, sha256, embedding (fixed-size float32)."""
    dim = emb.shape[1]
    values = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "model": pa.array([tag] * len(ids), pa.string()),
            "sha256": pa.array(sha256, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
        }
    )
    meta = {b"drawmatch.model_tag": tag.encode(), b"drawmatch.weights_hash": weights_hash.encode()}
    return table.replace_schema_metadata(meta)


def write_part(
    batch: dict[str, np.ndarray], out_dir: str, tag: str, weights_hash: str
) -> dict[str, np.ndarray]:
    """Write the ok rows of an embedded batch as one Parquet part; return id, ok, error per row."""
    ok = np.asarray(batch["ok"], dtype=bool)
    if ok.any():
        table = embeddings_table(
            [str(x) for x in batch["id"][ok]],
            [str(x) for x in batch["sha256"][ok]],
            np.asarray(batch["embedding"])[ok],
            tag,
            weights_hash,
        )
        storage.write_parquet(table, storage.join(out_dir, f"part-{uuid.uuid4().hex}.parquet"))
    return {"id": batch["id"], "ok": ok, "error": batch["error"]}


def part_files(directory: str | Path) -> list[str]:
    return storage.list_files(directory, "part-*.parquet")


def read_model_info(out: str | Path, tag: str) -> dict[str, Any]:
    path = storage.join(embeddings_dir(out, tag), MODEL_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"no embeddings for model {tag!r} under {storage.join(out, 'embeddings')}"
        )
    return dict(json.loads(storage.read_text(path)))


def list_model_tags(out: str | Path) -> list[str]:
    found = storage.list_files(storage.join(out, "embeddings"), f"*/{MODEL_FILE}", recursive=True)
    return sorted(storage.name(storage.parent(p)) for p in found)


def pick_model_tag(out: str | Path, tag: str | None) -> str:
    """`tag` if given, else the only model under `out/embeddings` (an error if there are several)."""
    tags = list_model_tags(out)
    if tag is not None:
        if tag not in tags:
            raise FileNotFoundError(f"no embeddings for model {tag!r}; available: {tags or 'none'}")
        return tag
    if len(tags) != 1:
        raise ValueError(
            f"{len(tags)} embedding models under {out}: {tags or 'none'}; choose one with model_tag="
        )
    return tags[0]


def read_embeddings(
    out: str | Path, tag: str, ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Embeddings of one model as (ids, (N, D) float32); optionally only `ids`, in that order.

    Every part must carry the same model tag and weights hash as `model.json` (provenance check).
    """
    info = read_model_info(out, tag)
    all_ids: list[str] = []
    chunks: list[np.ndarray] = []
    for part in part_files(embeddings_dir(out, tag)):
        table = storage.read_parquet(part)
        meta = table.schema.metadata or {}
        got = (
            meta.get(b"drawmatch.model_tag", b"").decode(),
            meta.get(b"drawmatch.weights_hash", b"").decode(),
        )
        if got != (tag, info["weights_hash"]):
            raise ValueError(
                f"{part} holds embeddings of model {got}, not {tag} {info['weights_hash']}"
            )
        all_ids.extend(table.column("id").to_pylist())
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        chunks.append(flat.reshape(len(table), -1))
    emb = np.concatenate(chunks) if chunks else np.zeros((0, int(info["dim"])), np.float32)
    if ids is None:
        return all_ids, emb.astype(np.float32, copy=False)
    where = {k: i for i, k in enumerate(all_ids)}
    missing = [k for k in ids if k not in where]
    if missing:
        raise ValueError(f"{len(missing)} id(s) have no {tag} embedding: {missing[:10]}")
    return list(ids), emb[[where[k] for k in ids]].astype(np.float32, copy=False)


def _existing(directory: str) -> pd.DataFrame:
    frames = [
        storage.read_parquet(p, columns=["id", "sha256"]).to_pandas().assign(part=str(p))
        for p in part_files(directory)
    ]
    return pd.concat(frames) if frames else pd.DataFrame(columns=["id", "sha256", "part"])


def _drop_stale(directory: str, existing: pd.DataFrame, current: pd.DataFrame) -> int:
    """Rewrite parts without rows whose image content changed since they were embedded."""
    merged = existing.merge(current[["id", "sha256"]], on="id", suffixes=("", "_now"))
    stale = merged[merged["sha256"] != merged["sha256_now"]]
    for part, rows in stale.groupby("part"):
        table = storage.read_parquet(str(part))
        keep = ~np.isin(
            np.asarray(table.column("id").to_pylist(), dtype=object), rows["id"].to_numpy()
        )
        if keep.any():
            storage.write_parquet(table.filter(pa.array(keep)), str(part))
        else:
            storage.remove(str(part))
    return len(stale)


@dataclass
class EmbedResult:
    model_tag: str
    weights_hash: str
    directory: str
    selected: int = 0
    already_done: int = 0
    embedded: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stale_replaced: int = 0


def select_rows(catalogue: pd.DataFrame, config: EmbedConfig) -> pd.DataFrame:
    """Catalogue rows to embed: usable rows of the chosen collections, originals unless
    `include_styled`."""
    rows = catalogue[cat.usable(catalogue) & catalogue["collection"].isin(config.collections)]
    if not config.include_styled:
        rows = rows[rows["parent_id"].isna()]
    return rows


def run(config: EmbedConfig) -> EmbedResult:
    """Embed the selected catalogue rows that have no up-to-date embedding yet."""
    import ray

    from drawmatch.rayutil import check_resources, init_ray

    catalogue = cat.read_catalogue(config.out)
    roots = cat.read_roots(config.out)
    rows = select_rows(catalogue, config)

    # Build the model once here to learn its tag and weights hash (provenance); actors rebuild it.
    probe = Embedder(asdict(config.model), num_threads=None)
    tag, whash, dim = probe.tag, probe.weights_hash, probe.dim
    del probe
    directory = embeddings_dir(storage.absolute(config.out), tag)
    info_path = storage.join(directory, MODEL_FILE)
    if storage.exists(info_path):
        info = json.loads(storage.read_text(info_path))
        if info["weights_hash"] != whash:
            raise ValueError(
                f"{directory} holds embeddings of weights {info['weights_hash']}, but this model "
                f"has weights {whash}; use another output root or remove that folder"
            )
    storage.makedirs(directory)
    model_info = {
        "model_tag": tag,
        "weights_hash": whash,
        "dim": dim,
        "model": asdict(config.model),
    }
    storage.write_bytes(info_path, json.dumps(model_info, indent=2).encode())
    save_config(config, storage.join(directory, "embed_config.yaml"))

    existing = _existing(directory)
    result = EmbedResult(model_tag=tag, weights_hash=whash, directory=str(directory))
    result.selected = len(rows)
    result.stale_replaced = _drop_stale(directory, existing, rows)
    existing = _existing(directory)
    done = set(existing["id"])
    todo = rows[~rows["id"].isin(done)][["id", "root", "path", "sha256"]].reset_index(drop=True)
    result.already_done = result.selected - len(todo)
    print(
        f"embed {tag}: {len(rows)} selected, {result.already_done} already embedded, "
        f"{len(todo)} to do"
    )
    if len(todo) == 0:
        return result

    init_ray(config.ray)
    # Embedding actors hold their CPUs for the whole job: a decode task must still fit beside them.
    check_resources(
        config.ray,
        {
            "CPU": config.num_actors * config.cpus_per_actor + config.decode_cpus,
            "GPU": config.num_actors * config.gpus_per_actor,
        },
        "the embed job (num_actors x cpus_per_actor + decode_cpus, num_actors x gpus_per_actor)",
        "lower cpus_per_actor or decode_cpus (fractions are fine), or num_actors",
    )
    block_rows = max(config.decode_batch_size * 4, 1)
    chunks = [todo.iloc[i : i + block_rows] for i in range(0, len(todo), block_rows)]
    threads = max(1, int(config.cpus_per_actor))
    ds: Any = ray.data.from_pandas(chunks)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={
            "roots": roots,
            "image_size": config.model.image_size,
            "max_pixels": config.max_image_pixels,
        },
        batch_size=config.decode_batch_size,
        batch_format="numpy",
        # A CPU reservation unlike the actors' keeps Ray Data from fusing decoding into the
        # embedding actors: decode tasks and embedding actors then scale separately.
        num_cpus=config.decode_cpus,
        concurrency=config.decode_concurrency,
    )
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": asdict(config.model), "num_threads": threads},
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor,
        concurrency=config.num_actors,
    )
    ds = ds.map_batches(
        write_part,
        fn_kwargs={"out_dir": directory, "tag": tag, "weights_hash": whash},
        batch_size=config.rows_per_file,
        batch_format="numpy",
        num_cpus=0.1,
    )
    error_rows: list[tuple[str, str]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        result.embedded += int(ok.sum())
        error_rows.extend(zip(batch["id"][~ok].tolist(), batch["error"][~ok].tolist()))
        log.info("embedded %d/%d (%d errors)", result.embedded, len(todo), len(error_rows))
    for _id, reason in error_rows:
        result.errors[reason] = result.errors.get(reason, 0) + 1
    if error_rows:
        storage.write_bytes(
            storage.join(directory, ERRORS_FILE),
            pd.DataFrame(error_rows, columns=["id", "error"]).to_csv(index=False).encode(),
        )
    if result.embedded + len(error_rows) != len(todo):
        raise RuntimeError(
            f"embed lost rows: {len(todo)} in, {result.embedded} embedded, {len(error_rows)} errors"
        )
    print(
        f"embed {tag}: {result.embedded} embedded, {len(error_rows)} failed {result.errors}, "
        f"written to {directory}"
    )
    return result

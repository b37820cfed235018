"""The embedding model: a registry backbone, optionally with fine-tuned weights, that turns
eval-resized uint8 images into L2-normalised vectors. Used by the embed job's Ray Data actors and by
search for query images; its model tag and weights hash are the provenance of every vector.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drawmatch.core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, Config, setting
from drawmatch.data.embeddings import model_tag, read_model_info
from drawmatch.models.preprocess import load_eval_array, normalise


@dataclass(frozen=True)
class ModelConfig(Config):
    """A backbone from the registry (`drawmatch models` lists them); `weights` is a fine-tuned
    checkpoint file or null. `image_size` null: the backbone's own input size; `pooling` null: its
    default pooling (CNNs: avg, max or gem; vision transformers: cls or avg, the mean of the patch
    tokens)."""

    backbone: str = setting("efficientnet_lite0", help="backbone name (`drawmatch models`)")
    pretrained: bool = setting(True, help="start from the backbone's pretrained weights")
    image_size: int | None = setting(
        None,
        ge=MIN_IMAGE_SIZE,
        le=MAX_IMAGE_SIZE,
        help="input side in px (null: the backbone's own)",
    )
    pooling: str | None = setting(
        None, choices=("avg", "max", "gem", "cls"), help="pooling (null: the backbone's default)"
    )
    weights: str | None = setting(None, help="fine-tuned checkpoint file (null: none)")
    runtime: str = setting(
        "auto",
        choices=("auto", "torch", "onnx"),
        help="runs the forward: auto (onnx on CPU workers, torch on GPUs), torch or onnx",
    )


log = logging.getLogger("drawmatch.models.embedder")
_told: set[str] = set()  # the fall-backs already reported in this process


def say_once(message: str) -> None:
    """Log `message` as a warning the first time this process meets it."""
    if message not in _told:
        _told.add(message)
        log.warning(message)


def choose_runtime(runtime: str, cuda: bool) -> str:
    """The runtime that runs the forward in this worker: `auto` is torch where CUDA is available
    to the worker (a Ray worker sees a GPU only when it reserved one), else onnx."""
    if runtime != "auto":
        return runtime
    return "torch" if cuda else "onnx"


def set_threads(num_threads: int) -> None:
    """Give torch exactly `num_threads` intra-op threads and one inter-op thread (Ray sets
    OMP_NUM_THREADS=1 in its workers unless told otherwise; more threads than reserved cores slow
    down sharply under contention). The inter-op pool can only be sized before first use."""
    import torch

    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already started in this process: it stays as it is


def set_nice(level: int) -> int:
    """Set this process's nice level (Ray starts its workers at nice 15, which under CPU
    contention leaves them only the CPU time other processes leave over). Lowering it needs
    CAP_SYS_NICE or RLIMIT_NICE; where that is refused, the level stays and a warning says so.
    Returns the level in effect."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, level)
    except OSError as exc:
        log.warning("could not set nice %d (%s): staying at %d", level, exc, os.nice(0))
    return os.nice(0)


class Embedder:
    """Callable Ray Data stage: image batches -> L2-normalised embeddings.

    `__call__` takes `image` (B, S, S, 3) uint8 plus `id`, `sha256`, `ok`, `error`, and returns them
    with `embedding` (B, D) float32 (zeros where ok is False) instead of `image`.

    `model` is a `ModelConfig` as a dict; a null `image_size` or `pooling` is the backbone's own
    (`drawmatch.models.backbones.resolve_model`), and images are normalised with the backbone's own mean
    and std. The model tag says what the weights are: fine-tuned weights that equal the starting weights
    (a run whose best epoch was the pretrained model) get the starting weights' tag, not `ft-...`.
    `model.runtime` says what runs the forward: torch, or (`onnx`) the backbone exported once and
    run with onnxruntime on CPU (`drawmatch.models.onnx_runtime`), or (`auto`, the default) onnx
    where this worker has no CUDA device and torch where it has one; where the export or
    onnxruntime fails, `auto` falls back to torch and says so once (an explicit `onnx` raises).
    `self.runtime` is the runtime in use; the tag is the same for all. `num_threads`:
    torch's or onnxruntime's threads (the CPUs reserved); `nice`: this process's nice level (the
    embed job's actors pass `EmbedConfig.nice`; None leaves it).
    """

    def __init__(
        self, model: dict[str, Any], num_threads: int | None = None, nice: int | None = None
    ) -> None:
        import torch

        from drawmatch.models.backbones import (
            create_backbone,
            load_weights,
            resolve_model,
            weights_hash,
        )

        if nice is not None:
            set_nice(nice)
        if num_threads:
            set_threads(num_threads)
        cfg = resolve_model(ModelConfig(**model))  # the backbone's own input size and pooling
        assert cfg.image_size is not None and cfg.pooling is not None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = create_backbone(cfg.backbone, pretrained=cfg.pretrained, pooling=cfg.pooling)
        weights = net.weights
        self.weights_hash = weights_hash(net)
        if cfg.weights:
            load_weights(net, cfg.weights)
            loaded = weights_hash(net)
            if loaded != self.weights_hash:
                weights = f"ft-{loaded[:8]}"
            self.weights_hash = loaded
        self.tag = model_tag(cfg.backbone, cfg.pooling, cfg.image_size, weights)
        self.image_size = cfg.image_size
        self.dim = net.dim
        self.mean, self.std = net.mean, net.std
        self.runtime = choose_runtime(cfg.runtime, torch.cuda.is_available())
        self.onnx: Any = None
        if self.runtime == "onnx":
            self.onnx = self._onnx_model(net, cfg, num_threads)
            if self.onnx is not None:
                self.device = torch.device("cpu")
            else:
                self.runtime = "torch"
        self.net = net.eval().to(self.device)

    def _onnx_model(self, net: Any, cfg: ModelConfig, num_threads: int | None) -> Any:
        """The cached ONNX export of `net` in an onnxruntime session; None where `auto` cannot
        use it (the export or onnxruntime failed: said once, torch runs instead)."""
        assert cfg.image_size is not None and cfg.pooling is not None
        try:
            from drawmatch.models.onnx_runtime import load_or_export

            return load_or_export(
                net.eval(),
                cfg.backbone,
                cfg.pooling,
                cfg.image_size,
                self.weights_hash,
                cfg.weights,
                num_threads,
            )
        except Exception as exc:
            if cfg.runtime == "onnx":
                raise
            say_once(
                f"model.runtime=auto: {self.tag} cannot run with ONNX Runtime "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "running it with torch"
            )
            return None

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 -> (B, D) float32, L2-normalised."""
        import torch

        if self.onnx is not None:
            return self.onnx(images)  # type: ignore[no-any-return]
        with torch.inference_mode():
            x = normalise(images, self.mean, self.std, self.device)
            feats = torch.nn.functional.normalize(self.net(x).float(), dim=1)
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


def embedder_for(out: str | Path, tag: str) -> Embedder:
    """The model of stored embeddings `tag`, rebuilt and checked to have the same weights."""
    info = read_model_info(out, tag)
    embedder = Embedder(info["model"])
    if embedder.weights_hash != info["weights_hash"]:
        raise ValueError(
            f"the model rebuilt for {tag} has weights {embedder.weights_hash}, but its embeddings "
            f"were made with {info['weights_hash']}: refusing to mix models"
        )
    return embedder


def embed_image_file(path: str | Path, out: str | Path, tag: str) -> np.ndarray:
    """Embed any image file with the model of `tag`: (1, D) float32."""
    embedder = embedder_for(out, tag)
    return embedder.embed_images(load_eval_array(path, embedder.image_size)[None])

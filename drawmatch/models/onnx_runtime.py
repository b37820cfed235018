"""The ONNX Runtime path of the embedding model (`model.runtime=onnx`, and `auto` on workers
without a GPU): a registry backbone,
with its normalisation and L2 normalisation, exported once with `torch.onnx.export` and run with
onnxruntime on CPUs.

The exported graph takes the eval-resized images as they come from decoding, (B, S, S, 3) uint8,
and returns (B, D) float32 L2-normalised vectors: the same function as `Embedder.embed_images`
with torch. The file is cached, keyed by backbone, pooling, input size and weights hash:
next to a local fine-tuned weights file (`<weights>.<hash>-<size>.onnx`), else in the user's
cache folder (`$DRAWMATCH_CACHE`, else `$XDG_CACHE_HOME/drawmatch`, else `~/.cache/drawmatch`,
under `onnx/`). Writes are atomic, so actors that export at once on one node do not clash.

onnxruntime and onnx are core dependencies, imported only here.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from drawmatch.core import storage

ONNX_OPSET = 18


def cache_dir() -> Path:
    """Folder of exported models for pretrained or remote weights."""
    root = os.environ.get("DRAWMATCH_CACHE")
    if root:
        return Path(root) / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "drawmatch" / "onnx"


def onnx_path(
    backbone: str, pooling: str, image_size: int, weights_hash: str, weights: str | None
) -> Path:
    """Where the exported model of these weights lives: next to a local weights file whose
    folder is writable, else in `cache_dir()`."""
    key = f"{weights_hash}-{image_size}"
    if weights and not storage.is_uri(weights):
        here = Path(weights)
        if os.access(here.parent, os.W_OK):
            return here.with_name(f"{here.name}.{key}.onnx")
    return cache_dir() / f"{backbone}-{pooling}-{key}.onnx"


def _wrapper(net: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """The module that is exported: (B, S, S, 3) uint8 -> (B, D) L2-normalised float32."""
    import torch

    class Wrapped(torch.nn.Module):
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float() / 255.0
            x = (x - self.mean) / self.std
            return torch.nn.functional.normalize(self.net(x).float(), dim=1)

    return Wrapped().eval()


def export_onnx(
    net: Any, path: Path, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Path:
    """Export `net` (a Backbone in eval mode, on CPU) with a dynamic batch axis to `path`,
    atomically; returns `path`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((2, image_size, image_size, 3), dtype=torch.uint8)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention's fused inference kernel (open_clip's towers) has no ONNX form
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and folding notes
            torch.onnx.export(
                _wrapper(net, mean, std),
                (example,),
                tmp,
                input_names=["images"],
                output_names=["embedding"],
                dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class OnnxModel:
    """An exported model in an onnxruntime session with `threads` intra-op threads (the CPUs
    reserved for it; more threads than reserved cores slow down sharply under contention) and
    sequential execution (no inter-op pool)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 -> (B, D) float32, L2-normalised."""
        x = np.ascontiguousarray(images, dtype=np.uint8)
        out = self.session.run(None, {"images": x})[0]
        return np.asarray(out, dtype=np.float32)


def load_or_export(
    net: Any,
    backbone: str,
    pooling: str,
    image_size: int,
    weights_hash: str,
    weights: str | None,
    threads: int | None,
) -> OnnxModel:
    """The cached export of `net` (exported now if missing) in an onnxruntime session."""
    path = onnx_path(backbone, pooling, image_size, weights_hash, weights)
    if not path.exists():
        export_onnx(net.cpu().eval(), path, image_size, net.mean, net.std)
    return OnnxModel(path, threads)

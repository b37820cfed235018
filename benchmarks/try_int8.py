"""Int8 quantisation of the ONNX EfficientNet-Lite0 embedder, tried and rejected: demo metrics
and speed against the fp32 ONNX model.

    python benchmarks/try_int8.py

Static QDQ quantisation (onnxruntime.quantization, per-channel int8 weights, uint8 activations,
48 demo images for calibration) of the exported model (`model.runtime=onnx`). Prints the cosine
of int8 vs fp32 vectors on the 367 demo images, the retrieval metrics of both on the demo pairs,
and both rates (batch 4, one thread, three repeats). Accepted only if demo MAP moves by <= 0.5.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.models.preprocess import load_eval_array
from drawmatch.retrieval.metrics import retrieval_metrics_from_embeddings

DEMO = Path(__file__).resolve().parents[1] / "drawmatch" / "demo_data"


def main() -> int:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    drawings = sorted((DEMO / "drawings").iterdir())
    artworks = sorted((DEMO / "artworks").iterdir())
    imgs = np.stack([load_eval_array(f, 280) for f in drawings + artworks])
    fp32 = Embedder(asdict(ModelConfig(runtime="onnx")), num_threads=1)

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            idx = np.random.default_rng(0).choice(len(imgs), 48, replace=False)
            self.items = iter([{"images": imgs[i : i + 1]} for i in idx])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        q_path = str(Path(tmp) / "int8.onnx")
        quantize_static(
            str(fp32.onnx.path),
            q_path,
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        int8 = ort.InferenceSession(q_path, opts, providers=["CPUExecutionProvider"])
        a = np.concatenate([fp32.embed_images(imgs[i : i + 8]) for i in range(0, len(imgs), 8)])
        b = np.concatenate(
            [int8.run(None, {"images": imgs[i : i + 8]})[0] for i in range(0, len(imgs), 8)]
        )
        cos = (a * b).sum(1)
        print(f"cosine int8 vs fp32: min {cos.min():.4f}, median {np.median(cos):.4f}")
        pairs = pd.read_csv(DEMO / "pairs.csv")
        where = {f.stem: i for i, f in enumerate(artworks)}
        rel = [
            np.array([where[x] for x in pairs.loc[pairs["drawing_id"] == f.stem, "artwork_id"]])
            for f in drawings
        ]
        n = len(drawings)
        for name, emb in (("fp32", a), ("int8", b)):
            m = retrieval_metrics_from_embeddings(emb[:n], emb[n:], rel)
            print(name, " ".join(f"{k} {m[k]:.2f}" for k in ("MAP", "R@20", "MP", "MMP")))
        x = imgs[:4]
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(10):
                fp32.embed_images(x)
            r32 = 40 / (time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(10):
                int8.run(None, {"images": x})
            r8 = 40 / (time.perf_counter() - t)
            print(f"images/s, batch 4, 1 thread: fp32 {r32:.1f}, int8 {r8:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Local features for geometric verification: SIFT or ORB keypoints and descriptors (OpenCV),
matched between a query and a candidate artwork with Lowe's ratio test and verified with RANSAC
(a 4-degree-of-freedom similarity, `cv2.estimateAffinePartial2D`, as a detail copy is the artwork's
window moved and scaled). The inlier count is the geometric evidence; the inliers' bounding box in the
artwork is the matched region (ArtMiner, Shen et al. 2019, verifies local matches the same way).

Images are resized so that their longer side is `max_side` (small artworks are scaled up: SIFT finds
few keypoints on a 150-pixel thumbnail) and converted to gray. Keypoints are stored in pixels of that
resized image together with its width and height.

Store: `local_features/<kind>-<max_side>/part-*.parquet` under the output root with `id`, `sha256`,
`width`, `height`, `n` (keypoints), `keypoints` (n*2 float32, x y), `descriptors` (bytes: n*128 uint8
for SIFT, n*32 for ORB); `features.json` records the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from drawmatch.core import storage
from drawmatch.core.images import DEFAULT_MAX_PIXELS
from drawmatch.data.embeddings import stored_ids

KINDS = ("sift", "orb")
SETTINGS_FILE = "features.json"
STORED_COLUMNS = ("id", "sha256", "width", "height", "n", "keypoints", "descriptors")
# a resized image thinner than this has no keypoints (SIFT keeps 5 px off the border, ORB 31 px)
# and ORB's pyramid fails on it: such an image gets zero keypoints without running the detector
MIN_DETECT_SIDE = 8


@dataclass
class Features:
    """Keypoints (n, 2) float32 in pixels of a (width x height) image, descriptors (n, d) uint8."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int


def features_dir(out: str | Path, kind: str, max_side: int) -> str:
    return storage.join(out, "local_features", f"{kind}-{max_side}")


def _resize(img: Image.Image, max_side: int) -> np.ndarray:
    w, h = img.size
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(img.convert("L").resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def _detector(kind: str, n_features: int) -> Any:
    cv: Any = cv2  # OpenCV's stubs lack the feature factories
    if kind == "sift":
        return cv.SIFT_create(nfeatures=n_features)
    if kind == "orb":
        return cv.ORB_create(nfeatures=n_features)
    raise ValueError(f"unknown local feature kind {kind!r}; choose one of {', '.join(KINDS)}")


def extract(
    img: Image.Image, kind: str = "sift", max_side: int = 400, n_features: int = 500
) -> Features:
    """Keypoints and descriptors of one image, resized to `max_side` on its longer side."""
    gray = _resize(img, max_side)
    detector = _detector(kind, n_features)
    dim = 128 if kind == "sift" else 32
    kps, desc = None, None
    if min(gray.shape) >= MIN_DETECT_SIDE:
        kps, desc = detector.detectAndCompute(gray, None)
    if desc is None or not kps:
        return Features(
            np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), gray.shape[1], gray.shape[0]
        )
    points = np.asarray([k.pt for k in kps], dtype=np.float32)
    # SIFT descriptors are non-negative and at most 255 after OpenCV's scaling: uint8 loses nothing
    descriptors = np.clip(desc, 0, 255).astype(np.uint8)
    return Features(points, descriptors, gray.shape[1], gray.shape[0])


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): each descriptor divided by its L1 norm, then the
    element-wise square root, as float32. The Euclidean distance of RootSIFT descriptors is the
    Hellinger distance of the SIFT histograms; rows of zeros stay zero."""
    d = np.asarray(descriptors, dtype=np.float32)
    norms = np.abs(d).sum(axis=1, keepdims=True)
    return np.sqrt(np.abs(d) / np.maximum(norms, np.float32(1e-12)))


def verify(
    query: Features,
    candidate: Features,
    kind: str = "sift",
    ratio: float = 0.8,
    reproj_px: float = 8.0,
    min_scale: float = 0.1,
    max_scale: float = 4.0,
    min_spread: float = 0.05,
    rootsift: bool = False,
) -> tuple[int, tuple[float, float, float, float] | None]:
    """RANSAC inliers of the query's matches in `candidate`, and the inliers' bounding box in the
    candidate (x0, y0, x1, y1 fractions; None under 3 inliers). A transform whose scale is outside
    [min_scale, max_scale], or whose inliers span less than `min_spread` of the candidate's side,
    is degenerate and counts 0 inliers. `rootsift`: match SIFT descriptors as RootSIFT
    (`root_sift`; ignored for ORB)."""
    if len(query.keypoints) < 3 or len(candidate.keypoints) < 3:
        return 0, None
    if kind == "sift":
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        if rootsift:
            qd, cd = root_sift(query.descriptors), root_sift(candidate.descriptors)
        else:
            qd = query.descriptors.astype(np.float32)
            cd = candidate.descriptors.astype(np.float32)
    else:
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        qd, cd = query.descriptors, candidate.descriptors
    pairs = matcher.knnMatch(qd, cd, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    # one match per candidate keypoint (the closest): many query points on one candidate point
    # would let RANSAC count a collapsed transform's matches as inliers
    best: dict[int, Any] = {}
    for m in good:
        if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
            best[m.trainIdx] = m
    good = list(best.values())
    if len(good) < 3:
        return 0, None
    src = query.keypoints[[m.queryIdx for m in good]]
    dst = candidate.keypoints[[m.trainIdx for m in good]]
    # reprojection threshold in pixels of the candidate image (max_side pixels on its longer side)
    _m, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=reproj_px, maxIters=500, confidence=0.99
    )
    if mask is None or _m is None:
        return 0, None
    # a plausible copy maps the query onto at least a tenth of the candidate's side and at most
    # 4x over it (query and candidate are both resized to max_side); anything else is degenerate
    scale = float(np.hypot(_m[0, 0], _m[1, 0]))
    if not min_scale <= scale <= max_scale:
        return 0, None
    inl = mask.ravel().astype(bool)
    n = int(inl.sum())
    if n < 3:
        return n, None
    pts = dst[inl]
    spread = np.ptp(pts, axis=0) / np.array([candidate.width, candidate.height])
    if float(spread.max()) < min_spread:
        return 0, None
    box = (
        float(pts[:, 0].min() / candidate.width),
        float(pts[:, 1].min() / candidate.height),
        float(pts[:, 0].max() / candidate.width),
        float(pts[:, 1].max() / candidate.height),
    )
    return n, box


def features_table(ids: list[str], sha256: list[str], feats: list[Features]) -> pa.Table:
    """The stored table of `feats` (any number of keypoints, zero included)."""
    return stored_table(
        {
            "id": ids,
            "sha256": sha256,
            "width": [f.width for f in feats],
            "height": [f.height for f in feats],
            "n": [len(f.keypoints) for f in feats],
            "keypoints": [np.ascontiguousarray(f.keypoints, np.float32).tobytes() for f in feats],
            "descriptors": [np.ascontiguousarray(f.descriptors).tobytes() for f in feats],
        }
    )


def stored_table(columns: dict[str, Any]) -> pa.Table:
    """The store's table of columns as `LocalFeatureExtractor` returns them (`id`, `sha256`,
    `width`, `height`, `n`, and `keypoints` and `descriptors` as bytes, written as they are)."""
    return pa.table(
        {
            "id": pa.array([str(v) for v in columns["id"]], pa.string()),
            "sha256": pa.array([str(v) for v in columns["sha256"]], pa.string()),
            "width": pa.array([int(v) for v in columns["width"]], pa.int32()),
            "height": pa.array([int(v) for v in columns["height"]], pa.int32()),
            "n": pa.array([int(v) for v in columns["n"]], pa.int32()),
            "keypoints": pa.array([bytes(v) for v in columns["keypoints"]], pa.binary()),
            "descriptors": pa.array([bytes(v) for v in columns["descriptors"]], pa.binary()),
        }
    )


def read_features(out: str | Path, kind: str, max_side: int) -> dict[str, Features]:
    """Every stored artwork's features, by id (the first part's row where an id is stored twice)."""
    dim = 128 if kind == "sift" else 32
    found: dict[str, Features] = {}
    for part in storage.list_files(features_dir(out, kind, max_side), "part-*.parquet"):
        frame = storage.read_parquet(part).to_pandas()
        for row in frame.itertuples(index=False):
            if row.id in found:
                continue
            found[str(row.id)] = Features(
                np.frombuffer(row.keypoints, np.float32).reshape(-1, 2),
                np.frombuffer(row.descriptors, np.uint8).reshape(-1, dim),
                int(row.width),
                int(row.height),
            )
    return found


class LocalFeatureExtractor:
    """Callable Ray Data stage: catalogue rows (`id`, `root`, `path`, `sha256`) -> `id`, `sha256`,
    `ok`, `error` and the stored columns of `features_table`. A row that fails (an image that does
    not decode or is over `max_pixels`, or a detector error) is ok False with its reason; zero
    keypoints is a valid row."""

    def __init__(
        self,
        roots: dict[str, str],
        kind: str,
        max_side: int,
        n_features: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.roots, self.kind, self.max_side, self.n_features = roots, kind, max_side, n_features
        self.max_pixels = max_pixels
        cv2.setNumThreads(1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from drawmatch.core.images import ImageError, open_image

        rows: dict[str, list[Any]] = {k: [] for k in ("id", "sha256", "ok", "error")}
        feats: list[Features] = []
        for i in range(len(batch["id"])):
            path = storage.join(self.roots[str(batch["root"][i])], str(batch["path"][i]))
            rows["id"].append(str(batch["id"][i]))
            rows["sha256"].append(str(batch["sha256"][i]))
            reason = ""
            try:
                img = open_image(path, draft_size=self.max_side, max_pixels=self.max_pixels)
                feats.append(extract(img, self.kind, self.max_side, self.n_features))
            except ImageError as exc:
                reason = exc.reason
            except (cv2.error, ValueError, MemoryError) as exc:  # one image never sinks the job
                reason = f"local features failed: {type(exc).__name__}"
            if reason:
                feats.append(
                    Features(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.uint8), 0, 0)
                )
            rows["ok"].append(not reason)
            rows["error"].append(reason)
        table = features_table(rows["id"], rows["sha256"], feats).to_pandas()
        result = {k: np.asarray(v, dtype=object) for k, v in rows.items()}
        result["ok"] = np.asarray(rows["ok"], dtype=bool)
        for column in ("width", "height", "n", "keypoints", "descriptors"):
            result[column] = table[column].to_numpy()
        return result


def stored_feature_ids(out: str | Path, kind: str, max_side: int) -> pd.DataFrame:
    """`id`, `sha256`, `part`, `row` of every stored row (the embeddings store's listing: the
    rows of an artwork whose content changed are dropped with `embeddings.drop_rows`)."""
    return stored_ids(features_dir(out, kind, max_side))

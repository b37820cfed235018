"""Local features for verification: RootSIFT descriptors by hand, and RootSIFT matching still
verifies a detail copy of its artwork and not another artwork."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from drawmatch.models.local_features import extract, root_sift, verify


def test_root_sift_by_hand():
    d = np.zeros((3, 128), np.uint8)
    d[0, 0], d[0, 5] = 4, 12  # L1 norm 16: 0.25 and 0.75, square roots 0.5 and sqrt(3)/2
    d[1, :] = 2  # 128 equal bins: each 1/128, square root 1/sqrt(128)
    got = root_sift(d)  # row 2 is all zeros: stays zero
    want = np.zeros((3, 128), np.float32)
    want[0, 0], want[0, 5] = 0.5, np.sqrt(3) / 2
    want[1, :] = 1 / np.sqrt(128)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Hellinger kernel: every non-zero RootSIFT descriptor has unit L2 norm
    np.testing.assert_allclose(np.linalg.norm(got[:2], axis=1), 1.0, atol=1e-6)


def _blocks(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return np.kron(cells, np.ones((16, 16, 1), np.uint8))


@pytest.mark.parametrize("side", [400, 800])
def test_root_sift_verifies_a_detail_of_its_artwork_only(side):
    art, other = _blocks(0), _blocks(1)
    # a quarter-side detail (x 0.5-0.75, y 0.25-0.5) scaled up, as a child draws a small figure big
    detail = Image.fromarray(art[96:192, 192:288]).resize((300, 300), Image.Resampling.BICUBIC)
    qf = extract(detail, "sift", 400)
    af = extract(Image.fromarray(art), "sift", side, 2000)
    n, box = verify(qf, af, rootsift=True)
    n_other, _ = verify(qf, extract(Image.fromarray(other), "sift", side, 2000), rootsift=True)
    assert n >= 12 and n_other < 8
    assert box is not None
    assert box[0] >= 0.45 and box[2] <= 0.8 and box[1] >= 0.2 and box[3] <= 0.55

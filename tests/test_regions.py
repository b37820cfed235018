"""Region search for partial copies: boxes, pooling, index, fusion, verification and the real jobs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from drawmatch import embed, evaluate, index, regions, search
from drawmatch.embedder import Embedder
from drawmatch.local_features import extract, verify
from drawmatch.region_embedder import (
    RegionEmbedder,
    box_cells,
    pool_regions,
    read_regions,
    region_boxes,
)
from drawmatch.region_index import (
    RegionIndex,
    best_per_artwork,
    build_region_faiss,
    exact_region_scores,
    fuse,
)
from drawmatch.settings import (
    EmbedConfig,
    EvaluateConfig,
    IndexConfig,
    ModelConfig,
    RegionsConfig,
    RegionSearchParams,
    SearchConfig,
    load_config,
)
from tests.conftest import hand_catalogue

TINY = ModelConfig(backbone="tiny", pretrained=False, image_size=32)


def test_region_boxes_cover_the_image_level_by_level():
    boxes = region_boxes((1, 2, 3), overlap=0.4)
    assert boxes.shape == (1 + 4 + 9, 4)
    np.testing.assert_allclose(boxes[0], [0, 0, 1, 1])
    # level 2: side 1 / (2 - 0.4) = 0.625, windows at 0 and 0.375, overlapping by 0.4 * side
    np.testing.assert_allclose(boxes[1:5, 0], [0, 0.375, 0, 0.375], atol=1e-6)
    np.testing.assert_allclose(boxes[1:5, 2] - boxes[1:5, 0], 0.625, atol=1e-6)
    # level 3: side 1 / 2.2, last window ends at 1
    np.testing.assert_allclose(boxes[5:, 2] - boxes[5:, 0], 1 / 2.2, atol=1e-6)
    assert boxes[5:, 2].max() == pytest.approx(1.0) and boxes[5:, 0].min() == 0.0
    grid = np.linspace(0, 1, 41)
    for level in (slice(0, 1), slice(1, 5), slice(5, 14)):
        b = boxes[level]
        for x in grid:
            for y in grid:
                inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
                assert inside.any(), (level, x, y)
    quadrants = region_boxes((2,), overlap=0.0)
    np.testing.assert_allclose(
        quadrants, [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]]
    )
    with pytest.raises(ValueError):
        region_boxes((2,), overlap=1.0)


def test_box_cells_and_pooling_by_hand():
    assert box_cells(np.array([0, 0, 0.5, 0.5]), 4, 4) == (0, 2, 0, 2)
    assert box_cells(np.array([0.375, 0.375, 1.0, 1.0]), 4, 4) == (1, 4, 1, 4)
    assert box_cells(np.array([0.99, 0.99, 1.0, 1.0]), 4, 4) == (3, 4, 3, 4)  # at least one cell
    fmap = torch.zeros((1, 2, 2, 2))
    fmap[0, 0, 0, 0] = 3.0  # channel 0 only in the top-left cell
    fmap[0, 1] = 1.0  # channel 1 everywhere
    v = pool_regions(fmap, region_boxes((1, 2), 0.0), "avg")  # (1, 5, 2)
    np.testing.assert_allclose(v[0, 0], np.array([0.75, 1.0]) / 1.25, atol=1e-6)
    np.testing.assert_allclose(v[0, 1], np.array([3.0, 1.0]) / np.sqrt(10), atol=1e-6)
    np.testing.assert_allclose(v[0, 2], [0.0, 1.0], atol=1e-6)


def _quadrant_artworks(n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` 64x64 artworks, each four 32x32 quadrants of its own random texture (8x8 blocks of
    random colours, so no quadrant appears in two artworks)."""
    rng = np.random.default_rng(seed)
    arts = []
    for _ in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        for qy in (0, 32):
            for qx in (0, 32):
                blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                img[qy : qy + 32, qx : qx + 32] = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
        arts.append(img)
    return arts


def test_a_detail_finds_its_artwork_at_rank_one_by_its_region():
    """A quadrant of artwork 3, seen at the query size, equals that artwork's quadrant region seen
    at twice the size (the same 4x4 feature cells, up to the borders): region search ranks
    artwork 3 first, with that quadrant's box."""
    arts = _quadrant_artworks(6)
    embedder = Embedder(asdict(TINY))
    regioner = RegionEmbedder(asdict(TINY), levels=(1, 2), overlap=0.0)
    vectors = regioner.embed_regions(np.stack(arts))  # (6, 5, D): whole + 4 quadrants at 64 px
    detail = arts[3][32:, :32]  # bottom-left quadrant, 32x32: the query size
    q = embedder.embed_images(detail[None])
    ids = [f"art{i}" for i in range(6) for _ in range(5)]
    flat = vectors.reshape(30, -1)
    scores, rows = exact_region_scores(q, flat, ids, [f"art{i}" for i in range(6)])
    assert int(np.argmax(scores[0])) == 3
    assert rows[0, 3] % 5 == 3  # region 3: the bottom-left quadrant
    np.testing.assert_allclose(regioner.boxes[3], [0, 0.5, 0.5, 1.0])
    # the same through a flat FAISS index and best-per-artwork
    idx = build_region_faiss(flat, "flat")
    s, p = idx.search(q, 30)
    best, boxes = best_per_artwork(
        [ids[i] for i in p[0]], s[0], np.tile(regioner.boxes, (6, 1))[p[0]]
    )
    assert max(best, key=best.get) == "art3" and boxes["art3"] == tuple(regioner.boxes[3])


def test_approximate_region_indexes_agree_with_exact_on_small_data():
    """200 artworks x 10 region vectors; queries are noisy copies of region vectors. The
    approximate indexes (IVF, IVF-PQ, HNSW) find the same best artwork as the exact one, and mostly the
    same top 10."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"a{i // 10}" for i in range(2000)]
    queries = emb[rng.integers(0, 2000, 30)] + 0.1 * rng.normal(size=(30, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def ranked_artworks(index: object, n_hits: int = 200) -> list[list[str]]:
        s, p = index.search(np.ascontiguousarray(queries), n_hits)  # type: ignore[attr-defined]
        out = []
        for row_s, row_p in zip(s, p):
            ok = row_p >= 0
            best, _b = best_per_artwork(
                [ids[i] for i in row_p[ok]], row_s[ok], np.zeros((int(ok.sum()), 4))
            )
            out.append(sorted(best, key=lambda a: -best[a]))
        return out

    exact = ranked_artworks(build_region_faiss(emb, "flat"))
    for kind in ("ivf", "ivfpq", "hnsw"):
        approx = ranked_artworks(build_region_faiss(emb, kind, nlist=16, nprobe=8, pq_m=16))
        top1 = np.mean([a[0] == e[0] for a, e in zip(approx, exact)])
        top10 = np.mean([len(set(a[:10]) & set(e[:10])) / 10 for a, e in zip(approx, exact)])
        assert top1 >= 0.95 and top10 >= 0.7, (kind, top1, top10)


def test_fused_score_is_the_global_score_when_the_region_term_is_off():
    rng = np.random.default_rng(1)
    g = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    r = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    np.testing.assert_array_equal(fuse(g, r, weight=0.0), g)
    # the region term only adds where a window beats the whole by more than the margin
    f = fuse(g, r, weight=1.0, margin=0.1)
    np.testing.assert_allclose(f, np.where(r - g > 0.1, r - 0.1, g), atol=1e-6)


def test_sift_and_ransac_verify_a_scaled_detail_and_find_its_box():
    rng = np.random.default_rng(0)
    art = np.kron(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    other = np.kron(
        rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8)
    )
    detail = Image.fromarray(art[96:288, 192:384]).resize((300, 300), Image.Resampling.BICUBIC)
    qf = extract(detail, "sift", 400)
    n, box = verify(qf, extract(Image.fromarray(art), "sift", 400))
    n_other, _ = verify(qf, extract(Image.fromarray(other), "sift", 400))
    assert n >= 20 and n_other < 10
    assert box is not None
    # the detail is x 0.5-1.0, y 0.25-0.75 of the artwork: the inliers lie inside it
    assert box[0] >= 0.45 and box[2] <= 1.02 and box[1] >= 0.2 and box[3] <= 0.8


@pytest.fixture(scope="module")
def region_run(ray_local, tmp_path_factory):
    """6 quadrant artworks and 3 drawings (two details, one whole copy), through the real embed,
    index and regions jobs with the tiny backbone."""
    root = tmp_path_factory.mktemp("regions")
    (root / "a").mkdir()
    (root / "d").mkdir()
    arts = _quadrant_artworks(6, seed=1)
    big = [np.kron(a, np.ones((4, 4, 1), np.uint8)) for a in arts]  # 256 px, sharp blocks for SIFT
    art_files = []
    for i, a in enumerate(big):
        Image.fromarray(a).save(root / "a" / f"art{i}.png")
        art_files.append(root / "a" / f"art{i}.png")
    Image.fromarray(big[2][128:, 128:]).save(root / "d" / "detail2.png")
    Image.fromarray(big[4][:128, :128]).save(root / "d" / "detail4.png")
    Image.fromarray(big[5]).save(root / "d" / "whole5.png")
    draw_files = [root / "d" / f"{n}.png" for n in ("detail2", "detail4", "whole5")]
    out = root / "out"
    hand_catalogue(out, {"drawing": draw_files, "artwork": art_files})
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    result = embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    index.run(IndexConfig(out=str(out)))
    cfg = RegionsConfig(out=str(out), region_size=64, levels=(1, 2), overlap=0.0)
    first = regions.run(cfg)
    pd.DataFrame(
        {"drawing_id": ["detail2", "detail4", "whole5"], "artwork_id": ["art2", "art4", "art5"]}
    ).to_csv(root / "pairs.csv", index=False)
    return out, result.model_tag, root, first, cfg


def test_regions_job_writes_regions_with_provenance_and_resumes(region_run):
    out, tag, _root, first, cfg = region_run
    assert first.embedded == 6 and first.regions_per_artwork == 5 and first.index_size == 30
    assert first.features_extracted == 6
    ids, region, box, emb = read_regions(out, tag)
    assert len(ids) == 30 and sorted(set(ids)) == [f"art{i}" for i in range(6)]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(box[:5], region_boxes((1, 2), 0.0))
    # the index's position -> (id, region, box) map round-trips
    ri = RegionIndex(out, tag)
    assert ri.ids == ids and ri.region.tolist() == region.tolist()
    np.testing.assert_allclose(ri.box, box)
    again = regions.run(cfg)
    assert again.embedded == 0 and again.already_done == 6 and again.features_extracted == 0
    with pytest.raises(ValueError, match="other settings"):
        regions.run(RegionsConfig(out=str(out), region_size=64, levels=(1, 3), overlap=0.0))


def test_region_search_finds_details_and_returns_the_box(region_run):
    out, _tag, _root, _first, _cfg = region_run
    found = search.run(SearchConfig(out=str(out), query="detail2", k=3, mode="region"))
    assert found["artwork_id"].iloc[0] == "art2"
    box = found.iloc[0][["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float)
    assert any(np.allclose(box, b) for b in region_boxes((1, 2), 0.0))  # one of its windows
    verified = search.run(SearchConfig(out=str(out), query="detail4", k=3, mode="verified"))
    assert verified["artwork_id"].iloc[0] == "art4" and verified["inliers"].iloc[0] >= 15
    # detail4 is the top-left quadrant: the RANSAC inliers' box lies in it
    vbox = verified.iloc[0][["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float)
    assert vbox[2] <= 0.55 and vbox[3] <= 0.55
    target = search.run(SearchConfig(out=str(out), batch=True, k=2, mode="fused"))
    table = pd.read_parquet(target)
    assert sorted(table["drawing_id"].unique()) == ["detail2", "detail4", "whole5"]
    assert set(table["mode"]) == {"fused"} and {"box_x0", "score", "distance"} <= set(table.columns)
    with pytest.raises(ValueError, match="mode"):
        search.run(SearchConfig(out=str(out), query="detail2", mode="nope"))


def test_evaluate_modes_and_fusion_off_equals_global(region_run):
    out, _tag, root, _first, _cfg = region_run
    pairs = str(root / "pairs.csv")
    base = evaluate.run(EvaluateConfig(out=str(out), pairs_csv=pairs))
    off = evaluate.run(
        EvaluateConfig(
            out=str(out), pairs_csv=pairs, mode="fused", region=RegionSearchParams(weight=0.0)
        )
    )
    assert off.metrics == pytest.approx(base.metrics)
    assert Path(off.path).name == "metrics-pairs-fused.json"
    verified = evaluate.run(EvaluateConfig(out=str(out), pairs_csv=pairs, mode="verified"))
    assert verified.metrics["R@1"] == pytest.approx(100.0)


def test_stale_regions_are_dropped_whole(tmp_path):
    """An artwork whose content changed loses all its region rows; a second copy of an artwork in
    a later part (two runs at once) is dropped whole; the rest stays."""
    from drawmatch.embeddings import stored_ids, write_part
    from drawmatch.region_embedder import regions_table

    def part(ids: list[str], sha: str) -> None:
        n = len(ids)
        table = regions_table(
            ids, [sha] * n, np.arange(n), np.zeros((n, 4)), np.ones((n, 2)), "t", "w", {}
        )
        write_part(str(tmp_path), table)

    part(["a", "a", "a", "b", "b", "b"], "old")
    part(["a", "a", "a"], "old")
    current = pd.DataFrame({"id": ["a", "b"], "sha256": ["old", "new"]})
    assert regions.drop_stale_regions(str(tmp_path), current) == 6
    left = stored_ids(str(tmp_path))
    assert left["id"].tolist() == ["a", "a", "a"] and left["part"].nunique() == 1

"""Region search for partial copies: boxes, pooling, index, fusion, verification and the real jobs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from drawmatch import cli
from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from drawmatch.jobs import embed, evaluate, index, regions, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.models.local_features import extract, verify
from drawmatch.models.region_embedder import (
    RegionEmbedder,
    box_cells,
    pool_regions,
    read_regions,
    region_boxes,
)
from drawmatch.retrieval.artwork_index import StaleIndexError
from drawmatch.retrieval.region_index import (
    RegionIndex,
    best_per_artwork,
    build_region_faiss,
    exact_region_scores,
    fuse,
)
from drawmatch.retrieval.region_search import RegionSearcher, RegionSearchParams
from tests.conftest import hand_catalogue, needs_chromium, served

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

    # features of another keypoint limit at the same side are refused, before anything is written
    def written() -> list[tuple[str, int]]:  # every file but the job's lock, and when written
        files = [p for p in Path(out).rglob("*") if p.is_file() and p.suffix != ".lock"]
        return sorted((str(p), p.stat().st_mtime_ns) for p in files)

    before = written()
    n = cfg.n_features
    with pytest.raises(ValueError, match=rf"at most {n} keypoints.*use n_features={n}$"):
        regions.run(replace(cfg, n_features=2 * n))
    assert written() == before
    # another side is another folder: extracted there, and the index then points to it
    side = cfg.feature_side // 2
    other_side = regions.run(replace(cfg, feature_side=side, n_features=2 * n))
    assert other_side.features_extracted == 6 and other_side.embedded == 0
    assert RegionIndex(out, tag).info["local_features"] == {
        "kind": "sift",
        "max_side": side,
        "n_features": 2 * n,
    }
    assert regions.run(cfg).features_extracted == 0  # back to the first folder: nothing to redo
    assert RegionIndex(out, tag).info["local_features"]["max_side"] == cfg.feature_side


def test_a_second_model_reuses_the_local_features_and_says_so(region_run, tmp_path, capsys):
    """Local features do not depend on the model: a regions run for a second model tag extracts
    none and its summary counts them as reused, not as "0 with local features"."""
    src, _tag, _root, first, cfg = region_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=48"]
    second = embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny])).model_tag
    capsys.readouterr()
    result = regions.run(replace(cfg, out=str(out), model_tag=second))
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert result.embedded == first.embedded and result.features_extracted == 0
    assert result.features_reused == first.features_extracted
    assert f"local features 0 extracted and {first.features_extracted} reused" in summary
    assert summary.startswith(f"regions {second}: {first.embedded} artworks embedded")


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


def test_verified_search_with_the_word_shortlist_verifies_only_its_candidates(region_run):
    """`region.shortlist=words`: the one artwork verified (`verify_top=1`) is the visual words'
    best, the detail's source; the word index is kept next to the features."""
    out, _tag, _root, _first, cfg = region_run
    params = RegionSearchParams(shortlist="words", verify_top=1, words=64)
    found = search.run(
        SearchConfig(out=str(out), query="detail4", k=3, mode="verified", region=params)
    )
    assert found["artwork_id"].iloc[0] == "art4" and found["inliers"].iloc[0] >= 15
    assert int((found["inliers"] >= 0).sum()) == 1  # the others were not verified (-1)
    kept = list((Path(out) / "local_features").glob(f"sift-{cfg.feature_side}/words-he64-64-*.npz"))
    assert len(kept) == 1


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


def test_query_features_have_their_own_side_and_the_artworks_the_stored_one(region_run):
    out, tag, root, _first, cfg = region_run
    gallery = [f"art{i}" for i in range(6)]
    params = RegionSearchParams(query_feature_side=200, query_n_features=40)
    searcher = RegionSearcher(out, tag, gallery, "verified", params)
    query = searcher.query_features(Image.open(root / "d" / "detail4.png"))  # 128 x 128 px
    assert (query.width, query.height) == (200, 200) and 0 < len(query.keypoints) <= 40
    art = searcher.features["art4"]  # the regions job's side (256 px artworks scaled up)
    assert searcher.feature_side == cfg.feature_side
    assert (art.width, art.height) == (cfg.feature_side, cfg.feature_side)
    assert len(art.keypoints) > 40


def test_stale_regions_are_dropped_whole(tmp_path):
    """An artwork whose content changed loses all its region rows; a second copy of an artwork in
    a later part (two runs at once) is dropped whole; the rest stays."""
    from drawmatch.data.embeddings import stored_ids, write_part
    from drawmatch.models.region_embedder import regions_table

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


_HOLD = (
    "import sys, time; from drawmatch.core.locks import job_lock\n"
    "with job_lock(sys.argv[1], 'regions', name='regions'):\n"
    "    print('holding', flush=True); time.sleep(600)\n"
)


def test_a_second_regions_run_on_one_output_root_is_refused_in_one_line(region_run, capsys):
    out, _tag, _root, _first, cfg = region_run
    holder = subprocess.Popen(  # another regions run, holding the output root's regions lock
        [sys.executable, "-c", _HOLD, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        before = sorted(p.name for p in Path(out).rglob("*"))
        code = cli.main(["regions", f"out={out}", "region_size=64", "levels=[1, 2]", "overlap=0"])
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith(
            f"drawmatch regions: error: another drawmatch regions run is writing to {out} "
            f"(pid {holder.pid} on host "
        )
        assert err.endswith("wait for it or use another out=\n") and err.count("\n") == 1
        assert sorted(p.name for p in Path(out).rglob("*")) == before  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert regions.run(cfg).already_done == 6  # released: the next run goes ahead


def test_a_stale_region_index_is_refused_with_the_command_that_rebuilds_it(region_run, tmp_path):
    src, tag, _root, _first, cfg = region_run
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"drawing_id": ["detail2"], "artwork_id": ["art2"]}).to_csv(pairs, index=False)
    out = tmp_path / "out"
    shutil.copytree(src, out)
    cfg = replace(cfg, out=str(out))
    catalogue = cat.read_catalogue(out)
    rebuild = f"run `drawmatch regions out={out} model_tag={tag}`"

    def region_search() -> pd.DataFrame:
        return search.run(SearchConfig(out=str(out), query="detail2", k=10, mode="region"))

    def refused(removed: int, added: int, changed: int) -> None:
        with pytest.raises(StaleIndexError) as err:
            region_search()
        assert str(err.value) == (
            f"the region index of {tag} is out of date ({removed} artworks removed, {added} "
            f"added, {changed} re-embedded since it was built): {rebuild}"
        )

    assert len(region_search()) == 6
    cat.write_catalogue(catalogue[catalogue["id"] != "art5"], out)  # art5 left the gallery
    refused(1, 0, 0)
    with pytest.raises(StaleIndexError, match="1 artworks removed"):  # evaluate too
        evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(pairs), mode="fused"))
    regions.run(cfg)
    found = region_search()
    assert found["artwork_id"].iloc[0] == "art2" and "art5" not in set(found["artwork_id"])

    cat.write_catalogue(catalogue, out)  # art5 is back (its global embedding was kept)
    refused(0, 1, 0)
    regions.run(cfg)
    assert len(region_search()) == 6

    # art3's image changed and the embed job re-embedded it; the regions job has not run since
    changed = catalogue.copy()
    changed.loc[changed["id"] == "art3", "sha256"] = "0" * 64
    cat.write_catalogue(changed, out)
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    assert embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny])).embedded == 1
    refused(0, 0, 1)
    assert regions.run(cfg).embedded == 1  # art3's regions again, then a fresh index
    assert region_search()["artwork_id"].iloc[0] == "art2"

    # an index folder copied from another model
    info_path = out / "index" / tag / "regions" / "index.json"
    info_path.write_text(info_path.read_text().replace(f'"{tag}"', '"other-model-tag"'))
    with pytest.raises(StaleIndexError, match=f"built for model 'other-model-tag', not '{tag}'"):
        region_search()


def _index_contents(out, tag, queries):
    """What the artwork and region indexes hold and find: ids, region rows, and every query's
    full ranking with its scores."""
    from drawmatch.retrieval.artwork_index import ArtworkIndex

    artworks = ArtworkIndex(out, tag)
    ranked, distances = artworks.search(queries, len(artworks.ids))
    gallery = cat.gallery_ids(cat.read_catalogue(out))
    region_index = RegionIndex(out, tag, gallery=gallery)
    rows = sorted(zip(region_index.ids, region_index.region.tolist()))
    hits = region_index.search(queries, len(region_index.ids))
    return sorted(artworks.ids), ranked, distances, rows, hits


def test_incremental_indexes_equal_a_full_rebuild(region_run, tmp_path, capsys):
    """Artworks added, changed and removed since: the embed, index and regions jobs redo only
    those, update both indexes in place, and the indexes hold and find what a full rebuild gives
    (same ids and region rows, same rankings and scores for every drawing and artwork)."""
    src, tag, root, _first, cfg = region_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    cfg = replace(cfg, out=str(out))
    arts = tmp_path / "a"
    arts.mkdir()
    for i in range(5):  # art5 leaves the gallery
        shutil.copy(root / "a" / f"art{i}.png", arts / f"art{i}.png")
    extra = [np.kron(a, np.ones((4, 4, 1), np.uint8)) for a in _quadrant_artworks(8, seed=7)]
    Image.fromarray(extra[6]).save(arts / "art3.png")  # art3's content changes
    Image.fromarray(extra[7]).save(arts / "art6.png")  # art6 is new
    drawings = sorted((root / "d").iterdir())
    hand_catalogue(out, {"drawing": drawings, "artwork": sorted(arts.iterdir())})
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    assert embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny])).embedded == 2
    capsys.readouterr()
    index.run(IndexConfig(out=str(out)))
    assert regions.run(cfg).embedded == 2
    said = capsys.readouterr().out
    assert "6 artworks updated: 2 out, 2 in" in said  # art5 and the old art3 out; art3, art6 in
    assert "region index updated: 10 vectors out, 2 artworks in" in said
    ids, queries = embeddings.read_embeddings(out, tag)
    assert len(ids) == 3 + 7  # the global embedding of art5 stays stored, out of the gallery
    updated = _index_contents(out, tag, queries)

    index.run(IndexConfig(out=str(out), rebuild=True))
    regions.run(replace(cfg, rebuild_index=True))
    said = capsys.readouterr().out
    assert "built from all vectors (rebuild=true)" in said
    rebuilt = _index_contents(out, tag, queries)
    assert updated[0] == rebuilt[0] == [f"art{i}" for i in (0, 1, 2, 3, 4, 6)]
    assert updated[1] == rebuilt[1]  # every query's ranking
    np.testing.assert_allclose(updated[2], rebuilt[2], atol=1e-6)
    assert updated[3] == rebuilt[3] and len(updated[3]) == 6 * 5
    for got, want in zip(updated[4], rebuilt[4]):
        assert got[0].keys() == want[0].keys() and got[1] == want[1]
        assert got[0] == pytest.approx(want[0], abs=1e-6)


def test_the_contact_sheet_frames_the_matched_box_at_its_pixels(tmp_path):
    """A 168 x 84 gray artwork fits a tile's 168-px thumbnail unscaled, pasted at (6, 48); its
    box (0.25, 0.5, 0.75, 1.0) is pixels x 6+42..6+126-1, y 48+42..48+84-1 of the tile."""
    from drawmatch.reporting import sheets

    art = tmp_path / "art.png"
    Image.new("RGB", (168, 84), (128, 128, 128)).save(art)
    assert sheets.box_pixels((0.25, 0.5, 0.75, 1.0), 168, 84, 6, 48) == (48, 90, 131, 131)
    boxed = sheets.Tile(str(art), "art", box=(0.25, 0.5, 0.75, 1.0))
    target = sheets.contact_sheet([[boxed, sheets.Tile(str(art), "art")]], tmp_path / "s.jpg")
    sheet = np.asarray(Image.open(target).convert("RGB")).astype(int)
    plain = sheets.contact_sheet([[sheets.Tile(str(art), "art")] * 2], tmp_path / "p.jpg")
    top = sheet.shape[0] - np.asarray(Image.open(plain)).shape[0] + sheets.GAP  # one legend line
    assert top > sheets.GAP
    magenta = (
        (np.abs(sheet - np.array(sheets.MATCH_BOX)).max(axis=2) < 60)
        & (sheet[..., 1] < 90)  # not the gray artwork nor the white paper
    )
    ys, xs = np.nonzero(magenta)
    tile_x, tile_y = sheets.GAP, top
    assert abs(xs.min() - (tile_x + 48)) <= 1 and abs(xs.max() - (tile_x + 131)) <= 1
    assert abs(ys.min() - (tile_y + 90)) <= 1 and abs(ys.max() - (tile_y + 131)) <= 1
    # the detail inside the frame is not covered, and the unboxed tile has no frame
    assert np.abs(sheet[tile_y + 110, tile_x + 90] - 128).max() < 12
    assert not magenta[:, sheets.GAP * 2 + sheets.THUMB :].any()


def test_search_writes_a_contact_sheet_with_the_matched_boxes(region_run, tmp_path):
    from drawmatch.reporting import sheets

    out, _tag, _root, _first, _cfg = region_run
    target = tmp_path / "detail4.jpg"
    found = search.run(
        SearchConfig(out=str(out), query="detail4", k=3, mode="verified", sheet=str(target))
    )
    assert found["artwork_id"].iloc[0] == "art4"
    # a verified artwork's distance is its fused one (weight 1, margin 0.02), not the bonus
    g, r = found["global_score"].iloc[0], found["region_score"].iloc[0]
    assert found["distance"].iloc[0] == pytest.approx(1 - (g + max(0.0, r - g - 0.02)), abs=1e-5)
    assert Image.open(target).size[0] == 4 * (sheets.THUMB + sheets.GAP) + sheets.GAP
    # the sheet's tiles: the query bare, art4 framed at its verified box (pixels: the test above)
    tiles = sheets.result_tiles("q.png", "detail4", found, {a: a for a in found["artwork_id"]})
    assert tiles[0].kind == "query" and tiles[0].box is None
    box = found.iloc[0][["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float)
    assert tiles[1].path == "art4" and tiles[1].box == pytest.approx(tuple(box))
    assert box[2] <= 0.55 and box[3] <= 0.55  # detail4 is art4's top-left quarter
    with pytest.raises(ValueError, match="one query's result"):
        search.run(SearchConfig(out=str(out), batch=True, mode="region", sheet=str(target)))


def _serve_client(out):
    from drawmatch.serve.app import create_app
    from drawmatch.serve.config import ServeConfig
    from tests.test_serve import signed_in

    client, _token = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    return client


def test_the_drawing_page_frames_the_matched_part_of_each_artwork(region_run):
    import re

    out, tag, _root, _first, _cfg = region_run
    client = _serve_client(out)
    expected = search.run(SearchConfig(out=str(out), query="detail4", k=6, mode="verified"))
    page = client.get(f"/drawings/detail4?model={tag}&mode=verified&k=6")
    assert page.status_code == 200
    assert "The frame on an artwork marks the part that matches the drawing" in page.text
    shown = re.findall(r'id="pair-[^"]*-(art\d)".*?(?:data-box="([^"]+)"|</li>)', page.text, re.S)
    assert [a for a, _b in shown] == expected["artwork_id"].tolist()
    first = expected.iloc[0]
    assert first["artwork_id"] == "art4" and first["inliers"] >= 15
    left, top, width, height = (float(v) for v in shown[0][1].split(","))
    x0, y0, x1, y1 = first[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float)
    assert (left, top) == pytest.approx((100 * x0, 100 * y0), abs=0.01)
    assert (width, height) == pytest.approx((100 * (x1 - x0), 100 * (y1 - y0)), abs=0.01)
    assert f'<rect class="line" x="{shown[0][1].split(",")[0]}" y="' in page.text
    assert "keypoints · verified" in page.text
    # global mode: no frames; a bad mode is refused
    plain = client.get(f"/drawings/detail4?model={tag}")
    assert "match-box" not in plain.text and 'data-box="' not in plain.text
    assert client.get("/drawings/detail4?mode=nearest").status_code == 400


def test_the_drawing_page_says_when_the_region_index_is_stale(region_run, tmp_path):
    src, tag, _root, _first, _cfg = region_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    catalogue = cat.read_catalogue(out)
    cat.write_catalogue(catalogue[catalogue["id"] != "art5"], out)
    index.run(IndexConfig(out=str(out)))  # the artwork index is rebuilt, the region index not
    page = _serve_client(out).get(f"/drawings/detail2?model={tag}&mode=fused")
    assert page.status_code == 200
    assert "out of date (1 artworks removed" in page.text
    assert f"drawmatch regions out={out} model_tag={tag}" in page.text


@pytest.mark.slow
@needs_chromium
def test_chromium_draws_the_box_over_the_matched_part(region_run, tmp_path, chromium):
    """In a real browser the frame lies over the artwork's image where the search put it."""
    out, tag, _root, _first, _cfg = region_run
    expected = search.run(SearchConfig(out=str(out), query="detail4", k=3, mode="verified"))
    x0, y0, x1, y1 = expected.iloc[0][["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(float)
    shot = tmp_path / "region-drawing.png"
    with served(out) as url:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/login?next=" + f"/drawings/detail4%3Fmodel%3D{tag}%26mode%3Dverified")
        page.fill("input[name=name]", "Test Expert")
        page.click("button[type=submit]")
        page.wait_for_selector("li.pair .match-box")
        page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        rects = page.evaluate(
            """() => { const li = document.querySelector('li.pair');
            const r = e => { const b = e.getBoundingClientRect();
              return [b.left, b.top, b.width, b.height]; };
            return [r(li.querySelector('.framed img')), r(li.querySelector('.match-box .line'))]; }"""
        )
        page.screenshot(path=str(shot))
    (il, it, iw, ih), (bl, bt, bw, bh) = rects
    assert iw > 50 and ih > 50  # the artwork is shown at a readable size
    assert bl == pytest.approx(il + x0 * iw, abs=1.5) and bt == pytest.approx(it + y0 * ih, abs=1.5)
    assert bw == pytest.approx((x1 - x0) * iw, abs=1.5)
    assert bh == pytest.approx((y1 - y0) * ih, abs=1.5)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    edge = pixels[int(bt + bh / 2), int(bl) - 1 : int(bl) + 2]  # the frame's left edge
    assert (np.abs(edge - np.array((212, 20, 140))).max(axis=1) < 40).any()

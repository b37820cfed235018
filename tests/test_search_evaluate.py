"""Search (one query, image file, filter, batch) and evaluate, on real jobs over tiny images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from drawmatch.data.pairs import PairsError
from drawmatch.jobs import embed, evaluate, index, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.models import embedder
from tests.conftest import hand_catalogue, make_image


@pytest.fixture(scope="module")
def searchable(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    drawings = [make_image(root / "d" / f"draw{i}.jpg", (64, 64), seed=i) for i in range(4)]
    artworks = [make_image(root / "a" / f"art{i}.jpg", (64, 64), seed=20 + i) for i in range(8)]
    out = root / "out"
    catalogue = hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    catalogue["artist"] = [None] * 4 + ["Monet", "Klimt"] * 4
    catalogue.loc[catalogue["id"] == "draw3", "verso"] = True
    cat.write_catalogue(catalogue, out)
    result = embed.run(
        load_config(
            EmbedConfig,
            None,
            [f"out={out}", "model.backbone=tiny", "model.pretrained=false", "model.image_size=48"],
        )
    )
    index.run(IndexConfig(out=str(out)))
    return out, result.model_tag, root


def _brute_force(out, tag, query_id, gallery):
    _q, q = embeddings.read_embeddings(out, tag, ids=[query_id])
    _g, g = embeddings.read_embeddings(out, tag, ids=gallery)
    sims = g @ q[0]
    order = np.argsort(-sims, kind="stable")
    return [gallery[i] for i in order], 1 - sims[order]


def test_search_one_drawing_matches_brute_force(searchable):
    out, tag, _root = searchable
    result = search.run(SearchConfig(out=str(out), query="draw0", k=3))
    gallery = [f"art{i}" for i in range(8)]
    ids, dist = _brute_force(out, tag, "draw0", gallery)
    assert result["artwork_id"].tolist() == ids[:3]
    np.testing.assert_allclose(result["distance"], dist[:3], atol=1e-5)
    assert result["rank"].tolist() == [1, 2, 3]  # 1-based, as people read ranks


def test_search_an_image_file_and_filter_by_artist(searchable):
    out, tag, root = searchable
    by_file = search.run(SearchConfig(out=str(out), query=str(root / "d" / "draw1.jpg"), k=8))
    by_id = search.run(SearchConfig(out=str(out), query="draw1", k=8))
    assert by_file["artwork_id"].tolist() == by_id["artwork_id"].tolist()
    monet = search.run(SearchConfig(out=str(out), query="draw1", k=8, where={"artist": "Monet"}))
    assert set(monet["artist"]) == {"Monet"} and len(monet) == 4


def test_search_refuses_versos_unknown_queries_and_other_models(searchable):
    out, tag, root = searchable
    with pytest.raises(ValueError, match="verso"):
        search.run(SearchConfig(out=str(out), query="draw3"))
    with pytest.raises(ValueError, match="neither a catalogue id nor an image file"):
        search.run(SearchConfig(out=str(out), query="nope"))
    info_path = Path(embeddings.embeddings_dir(out, tag)) / embeddings.MODEL_FILE
    saved = info_path.read_text()
    info = json.loads(saved)
    info["weights_hash"] = "0" * 16
    info_path.write_text(json.dumps(info))
    try:
        with pytest.raises(ValueError, match="refusing to mix models"):
            embedder.embed_image_file(root / "d" / "draw1.jpg", out, tag)
    finally:
        info_path.write_text(saved)


def test_batch_search_writes_top_k_for_every_drawing(searchable):
    out, tag, _root = searchable
    target = search.run(SearchConfig(out=str(out), batch=True, k=2))
    table = pd.read_parquet(target)
    assert sorted(table["drawing_id"].unique()) == ["draw0", "draw1", "draw2"]  # no verso
    assert len(table) == 3 * 2
    ids, _d = _brute_force(out, tag, "draw2", [f"art{i}" for i in range(8)])
    assert (
        table[table["drawing_id"] == "draw2"].sort_values("rank")["artwork_id"].tolist() == ids[:2]
    )


def test_evaluate_job_metrics_match_hand_ranks(searchable, tmp_path):
    out, tag, _root = searchable
    gallery = [f"art{i}" for i in range(8)]
    ranked0, _ = _brute_force(out, tag, "draw0", gallery)
    ranked1, _ = _brute_force(out, tag, "draw1", gallery)
    # draw0 <-> its 2nd and 5th ranked artworks; draw1 <-> its 1st.
    pairs = pd.DataFrame(
        {
            "drawing_id": ["draw0", "draw0", "draw1"],
            "artwork_id": [ranked0[1], ranked0[4], ranked1[0]],
        }
    )
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    result = evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(tmp_path / "pairs.csv")))
    m = result.metrics
    assert m["MP"] == pytest.approx((1 + 4 + 0) / 3)
    assert m["MMP"] == pytest.approx((1 + 0) / 2)
    assert m["R@1"] == pytest.approx(100 * (0 + 1) / 2)
    assert m["R@5"] == pytest.approx(100.0)
    ap0 = (1 / 2 + 2 / 5) / 2
    assert m["MAP"] == pytest.approx(100 * (ap0 + 1.0) / 2)
    with open(result.path) as fh:
        saved = json.load(fh)
    assert saved["metrics"]["MAP"] == pytest.approx(m["MAP"])


def test_evaluate_reports_all_unknown_ids_at_once(searchable, tmp_path):
    out, _tag, _root = searchable
    pd.DataFrame(
        {"drawing_id": ["draw0", "ghost1", "ghost2"], "artwork_id": ["art0", "art1", "nowhere"]}
    ).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(PairsError) as err:
        evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(tmp_path / "p.csv")))
    assert "ghost1" in str(err.value) and "ghost2" in str(err.value) and "nowhere" in str(err.value)


def test_evaluate_folds_aggregates_runs_into_mean_and_std(tmp_path, capsys):
    from drawmatch.cli import main

    for fold, (base, tuned) in enumerate([(10.0, 20.0), (14.0, 30.0)]):
        run_dir = tmp_path / "runs" / f"model-fold_{fold:02d}"
        run_dir.mkdir(parents=True)
        summary = {
            "best_epoch": 0,
            "baseline": {"val": {"MAP": base, "MP": 5.0}, "test": {"MAP": base + 1, "MP": 6.0}},
            "best": {
                "val": {"epoch": 0, "train_loss": 0.3, "val_MAP": tuned, "val_MP": 4.0},
                "test": {"MAP": tuned + 1, "MP": 3.0},
            },
        }
        (run_dir / "metrics.json").write_text(json.dumps(summary))
    assert main(["evaluate", f"out={tmp_path}", "--folds", "runs=model-fold_*"]) == 0
    report = json.loads((tmp_path / "evaluation" / "folds.json").read_text())
    tables = report["tables"]
    # val MAP fine-tuned: mean(20, 30) = 25, sample std = sqrt(((20-25)^2 + (30-25)^2) / 1) = 7.07
    assert tables["val/fine-tuned"]["MAP"] == pytest.approx([25.0, 50**0.5])
    assert tables["test/pretrained"]["MAP"] == pytest.approx([13.0, 8**0.5])
    assert tables["test/fine-tuned"]["MP"] == pytest.approx([3.0, 0.0])
    assert "train_loss" not in tables["val/fine-tuned"]
    assert "25.00 ± 7.07" in capsys.readouterr().out


# --- consistency: result names, ids in the wrong collection, repeated rows ----------------------


def test_evaluations_on_different_pairs_files_do_not_overwrite_each_other(searchable, tmp_path):
    out, tag, _root = searchable
    full = pd.DataFrame({"drawing_id": ["draw0", "draw1", "draw2"], "artwork_id": ["art0"] * 3})
    full.to_csv(tmp_path / "pairs.csv", index=False)
    full.iloc[:1].to_csv(tmp_path / "subset.csv", index=False)
    folds = full.assign(set=["train", "test", "test"], pair_id=range(3), parent_id="")
    folds.to_csv(tmp_path / "fold_00.csv", index=False)
    a = evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(tmp_path / "pairs.csv")))
    b = evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(tmp_path / "subset.csv")))
    c = evaluate.run(
        EvaluateConfig(out=str(out), split_csv=str(tmp_path / "fold_00.csv"), split_set="test")
    )
    where = Path(out) / "evaluation" / tag
    assert [a.path, b.path, c.path] == [
        str(where / "metrics-pairs.json"),
        str(where / "metrics-subset.json"),
        str(where / "metrics-fold_00-test.json"),
    ]
    sizes = [json.loads(Path(r.path).read_text())["metrics"]["n_pairs"] for r in (a, b, c)]
    assert sizes == [3, 1, 2]
    for name in ("pairs", "subset", "fold_00-test"):
        assert (where / f"evaluate_config-{name}.yaml").is_file()


def test_evaluate_refuses_pairs_that_put_an_artwork_as_drawing_or_back(searchable, tmp_path):
    out, _tag, _root = searchable
    pd.DataFrame(
        {"drawing_id": ["draw0", "art1", "art2"], "artwork_id": ["art0", "art3", "draw1"]}
    ).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(PairsError) as err:
        evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(tmp_path / "p.csv")))
    assert "2 drawing_id(s) that are artworks: art1, art2" in str(err.value)
    assert "1 artwork_id(s) that are drawings: draw1" in str(err.value)


def test_repeated_embedding_rows_change_no_result(searchable, tmp_path):
    """Parts written twice (two unlocked runs of an older version): index, search, batch search
    and evaluate see each id once and give the results of the clean store."""
    import shutil

    import pyarrow.parquet as pq

    clean, tag, _root = searchable
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    directory = Path(embeddings.embeddings_dir(out, tag))
    for part in embeddings.part_files(directory):
        embeddings.write_part(str(directory), pq.read_table(part))
    assert len(embeddings.stored_ids(str(directory))) == 2 * 11  # draw3, a verso, is never embedded
    pd.DataFrame({"drawing_id": ["draw0", "draw1"], "artwork_id": ["art0", "art5"]}).to_csv(
        tmp_path / "pairs.csv", index=False
    )
    evaluated = [
        evaluate.run(EvaluateConfig(out=str(o), pairs_csv=str(tmp_path / "pairs.csv"))).metrics
        for o in (clean, out)
    ]
    assert evaluated[0] == evaluated[1]
    assert index.run(IndexConfig(out=str(out))).size == 8
    one = [search.run(SearchConfig(out=str(o), query="draw0", k=8)) for o in (clean, out)]
    pd.testing.assert_frame_equal(one[0], one[1])
    batch = pd.read_parquet(search.run(SearchConfig(out=str(out), batch=True, k=8)))
    assert len(batch) == 3 * 8  # three searchable drawings (draw3 is a verso), each id once
    assert not batch.duplicated(["drawing_id", "artwork_id"]).any()

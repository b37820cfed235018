"""Artwork-disjoint folds: hand-made components, set sizes, real-pairs invariants, styled copies,
and the split job end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from drawmatch.core.config import ConfigError
from drawmatch.data import catalogue as cat
from drawmatch.data.pairs import PairsError, read_pairs
from drawmatch.jobs import split
from drawmatch.jobs.split import SplitConfig
from tests.conftest import hand_catalogue, make_image

FOLD_HEADER = "pair_id,drawing_id,artwork_id,set,parent_id"


def _entrypoint():
    """`jobs/split.py` loaded from its file, as `ray job submit` runs it."""
    path = Path(__file__).resolve().parents[1] / "jobs" / "split.py"
    spec = importlib.util.spec_from_file_location("drawmatch_jobs_split", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


split_main = _entrypoint().main


def _pairs(edges: list[tuple[str, str]], parents: list[str | None] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "drawing_id": [d for d, _ in edges],
            "artwork_id": [a for _, a in edges],
            "keep": True,
            "parent_id": parents if parents is not None else [None] * len(edges),
        }
    )


# --- components ------------------------------------------------------------------------------


def test_components_by_hand():
    pairs = _pairs([("d3", "a3"), ("d1", "a1"), ("d2", "a1"), ("d2", "a2")])
    assert split.pair_components(pairs) == [(["d1", "d2"], ["a1", "a2"]), (["d3"], ["a3"])]


def test_drawing_and_artwork_with_same_id_do_not_merge():
    # "x" is a drawing in one pair and an artwork in the other: two components, not one
    pairs = _pairs([("x", "a1"), ("d2", "x")])
    assert split.pair_components(pairs) == [(["d2"], ["x"]), (["x"], ["a1"])]


def test_components_chain_through_shared_artworks_and_drawings():
    # d1-a1-d2-a2-d3 is one chain; d4-a4 and d5-a4 share an artwork; d6-a6 stands alone
    pairs = _pairs(
        [
            ("d1", "a1"),
            ("d2", "a1"),
            ("d2", "a2"),
            ("d3", "a2"),
            ("d5", "a4"),
            ("d4", "a4"),
            ("d6", "a6"),
        ]
    )
    assert split.pair_components(pairs) == [
        (["d1", "d2", "d3"], ["a1", "a2"]),
        (["d4", "d5"], ["a4"]),
        (["d6"], ["a6"]),
    ]


# --- set sizes and assignment ----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, (0, 0, 0)),
        (1, (1, 0, 0)),
        (2, (1, 1, 0)),  # floor(1.2+.5)=1, floor(0.5+.5)=1, rest 0
        (3, (1, 1, 1)),  # 2, 1, 0 -> test takes one from train
        (4, (2, 1, 1)),  # floor(2.9)=2, floor(1.5)=1, rest 1
        (10, (6, 3, 1)),  # floor(6.5)=6, floor(3.0)=3, rest 1
        (20, (12, 5, 3)),  # 12, floor(5.5)=5, rest 3
        (61, (37, 15, 9)),  # floor(37.1)=37, floor(15.75)=15, rest 9
    ],
)
def test_set_sizes_rounding(n, expected):
    assert split.set_sizes(n) == expected


def test_assign_components_seeded():
    a = split.assign_components(20, seed=5)
    assert (a.count("train"), a.count("val"), a.count("test")) == (12, 5, 3)
    assert split.assign_components(20, seed=5) == a
    assert split.assign_components(20, seed=6) != a


def test_split_config_checks():
    with pytest.raises(ConfigError):
        SplitConfig(train=0.5, val=0.25, test=0.15)
    with pytest.raises(ConfigError):
        SplitConfig(n_folds=0)
    assert SplitConfig(train=0.7, val=0.2, test=0.1).n_folds == 11


# --- invariants on the real pairs ------------------------------------------------------------


def _components_union_find(pairs: pd.DataFrame) -> dict[str, str]:
    """Independent oracle: drawing id -> root key of its component (plain union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for d, a in zip(pairs["drawing_id"], pairs["artwork_id"], strict=True):
        parent[find("D" + d)] = find("A" + a)
    return {d: find("D" + d) for d in pairs["drawing_id"]}


def test_real_pairs_folds_invariants(imaj_dir):
    pairs = read_pairs(imaj_dir / "annotated_pairs_without_style_transfer.csv")
    assert len(pairs) == 131
    assert pairs["drawing_id"].nunique() == 127
    assert pairs["artwork_id"].nunique() == 100

    root_of = _components_union_find(pairs)
    n = len(set(root_of.values()))
    assert len(split.pair_components(pairs)) == n
    assert n >= 7  # no small-n adjustment applies: sizes are the plain round-half-up rule
    n_train = math.floor(0.6 * n + 0.5)
    n_val = math.floor(0.25 * n + 0.5)
    expected = {"train": n_train, "val": n_val, "test": n - n_train - n_val}

    folds = split.make_folds(pairs, n_folds=11, seed=0)
    assert len(folds) == 11
    for fold in folds:
        assert list(fold.columns) == ["pair_id", "drawing_id", "artwork_id", "set", "parent_id"]
        assert len(fold) == 131
        assert sorted(fold["pair_id"]) == list(range(131))
        assert fold["parent_id"].isna().all()
        assert set(fold["set"]) == {"train", "val", "test"}
        # the fold is the pairs file, row for row
        assert list(fold["drawing_id"]) == list(pairs["drawing_id"])
        assert list(fold["artwork_id"]) == list(pairs["artwork_id"])
        for column in ("drawing_id", "artwork_id"):
            sets_per_id = fold.groupby(column)["set"].nunique()
            assert (sets_per_id == 1).all(), f"{column} in two sets"
        fold = fold.assign(root=[root_of[d] for d in fold["drawing_id"]])
        assert (fold.groupby("root")["set"].nunique() == 1).all()
        comps = fold.groupby("set")["root"].nunique().to_dict()
        assert comps == expected
    signatures = {tuple(f["set"]) for f in folds}
    assert len(signatures) == 11  # every fold differs
    again = split.make_folds(pairs, n_folds=11, seed=0)
    for a, b in zip(folds, again, strict=True):
        pd.testing.assert_frame_equal(a, b)
    # fold k uses seed + k: fold 1 of seed 0 is fold 0 of seed 1
    pd.testing.assert_frame_equal(split.make_folds(pairs, 1, seed=1)[0], folds[1])


# --- styled copies ---------------------------------------------------------------------------


def _catalogue(rows: list[tuple[str, str, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "collection", "parent_id", "status"])


def test_styled_copies_only_for_train_parents():
    fold = pd.DataFrame(
        {
            "pair_id": [0, 1, 2],
            "drawing_id": ["d1", "d1", "d2"],
            "artwork_id": ["a1", "a9", "a2"],
            "set": ["train", "train", "test"],
            "parent_id": [None, None, None],
        }
    )
    catalogue = _catalogue(
        [
            ("d1", "drawing", None, "ok"),
            ("d2", "drawing", None, "ok"),
            ("d1_oil", "drawing", "d1", "ok"),
            ("d1_gray", "drawing", "d1", "ok"),
            ("d1_pencil", "drawing", "d1", "error"),  # failed copy: not used
            ("d2_oil", "drawing", "d2", "ok"),  # parent in test: not used
            ("a1", "artwork", None, "ok"),
        ]
    )
    out = split.add_styled_copies(fold, catalogue)
    assert out.iloc[:3].equals(fold)
    added = out.iloc[3:].reset_index(drop=True)
    expected = pd.DataFrame(
        {
            "pair_id": [0, 0, 1, 1],
            "drawing_id": ["d1_gray", "d1_oil", "d1_gray", "d1_oil"],
            "artwork_id": ["a1", "a1", "a9", "a9"],
            "set": ["train"] * 4,
            "parent_id": ["d1"] * 4,
        }
    )
    pd.testing.assert_frame_equal(added, expected, check_dtype=False)
    # idempotent: adding again repeats nothing
    assert len(split.add_styled_copies(out, catalogue)) == len(out)


def test_styled_pairs_in_pairs_file_follow_parent():
    # three components -> one per set; styled rows name their parent
    pairs = _pairs(
        [
            ("d1", "a1"),
            ("d2", "a2"),
            ("d3", "a3"),
            ("d1_oil", "a1"),
            ("d2_oil", "a2"),
            ("d3_oil", "a3"),
        ],
        [None, None, None, "d1", "d2", "d3"],
    )
    for fold in split.make_folds(pairs, n_folds=4, seed=3):
        originals = fold[fold["parent_id"].isna()]
        assert len(originals) == 3
        train_drawing = originals.loc[originals["set"] == "train", "drawing_id"].item()
        styled = fold[fold["parent_id"].notna()]
        assert list(styled["drawing_id"]) == [train_drawing + "_oil"]
        assert list(styled["set"]) == ["train"]
        assert styled["pair_id"].item() == int(train_drawing[1]) - 1  # d1 -> pair 0, ...
    bad = _pairs([("d1", "a1"), ("d1_oil", "a2")], [None, "d1"])
    with pytest.raises(PairsError, match="d1_oil"):
        split.make_folds(bad, n_folds=1)


# --- the job end to end ----------------------------------------------------------------------


def _job_fixture(tmp_path):
    drawings = [make_image(tmp_path / "d" / f"d{i}.jpg", (16, 16), seed=i) for i in range(1, 5)]
    artworks = [make_image(tmp_path / "a" / f"a{i}.jpg", (16, 16), seed=9 + i) for i in range(1, 5)]
    out = tmp_path / "out"
    catalogue = hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    styled = pd.DataFrame(
        [
            dict(
                catalogue.iloc[0].to_dict(),
                id=f"{p}_{s}",
                parent_id=p,
                style=s,
                root="out",
                path=f"styled/{p}_{s}.jpg",
            )
            for p, s in [("d1", "oil"), ("d1", "gray"), ("d3", "oil"), ("d4", "pencil")]
        ]
    )
    cat.write_catalogue(pd.concat([catalogue, styled], ignore_index=True), out)
    pairs_csv = tmp_path / "pairs.csv"
    # components {d1,d2,a1,a2}, {d3,a3}, {d4,a4}; the keep=false row is dropped
    pairs_csv.write_text(
        "drawing_id,artwork_id,keep,parent_id\n"
        "d1,a1,true,\nd2,a1,true,\nd2,a2,true,\nd3,a3,true,\nd4,a4,true,\n"
        "d3,a1,false,\n"
    )
    return out, pairs_csv


def test_split_job_end_to_end(tmp_path):
    out, pairs_csv = _job_fixture(tmp_path)
    assert split_main([f"out={out}", f"pairs_csv={pairs_csv}"]) == 0
    files = sorted((out / "folds").glob("fold_*.csv"))
    assert [f.name for f in files] == [f"fold_{k:02d}.csv" for k in range(11)]
    comp_of = {"d1": 0, "d2": 0, "d3": 1, "d4": 2}
    copies = {"d1": ["d1_gray", "d1_oil"], "d2": [], "d3": ["d3_oil"], "d4": ["d4_pencil"]}
    pair_id = {("d1", "a1"): 0, ("d2", "a1"): 1, ("d2", "a2"): 2, ("d3", "a3"): 3, ("d4", "a4"): 4}
    for f in files:
        assert f.read_text().splitlines()[0] == FOLD_HEADER
        fold = pd.read_csv(f, dtype=str, keep_default_na=False)
        orig = fold[fold["parent_id"] == ""]
        rows = zip(orig["pair_id"], orig["drawing_id"], orig["artwork_id"], strict=True)
        assert {(d, a): int(p) for p, d, a in rows} == pair_id
        set_of = dict(zip(orig["drawing_id"], orig["set"], strict=True))
        assert len({set_of[d] for d in ("d1", "d2")}) == 1
        assert sorted({set_of[d] for d in comp_of}) == ["test", "train", "val"]
        train_drawings = [d for d in sorted(set_of) if set_of[d] == "train"]
        styled = fold[fold["parent_id"] != ""]
        expected_copies = sorted(c for d in train_drawings for c in copies[d])
        assert sorted(styled["drawing_id"]) == expected_copies
        assert set(styled["set"]) <= {"train"}
        for _, row in styled.iterrows():
            assert row["drawing_id"].startswith(row["parent_id"] + "_")
            assert int(row["pair_id"]) == pair_id[(row["parent_id"], row["artwork_id"])]
    summary = json.loads((out / "folds" / "summary.json").read_text())
    assert len(summary) == 11
    for entry in summary:
        assert sum(entry[s]["components"] for s in ("train", "val", "test")) == 3
        assert sum(entry[s]["pairs"] for s in ("train", "val", "test")) == 5
    assert "n_folds: 11" in (out / "folds" / "split_config.yaml").read_text()


def test_split_job_fewer_folds_removes_stale_files(tmp_path):
    out, pairs_csv = _job_fixture(tmp_path)
    assert split_main([f"out={out}", f"pairs_csv={pairs_csv}"]) == 0
    assert split_main([f"out={out}", f"pairs_csv={pairs_csv}", "n_folds=2"]) == 0
    names = sorted(f.name for f in (out / "folds").glob("fold_*.csv"))
    assert names == ["fold_00.csv", "fold_01.csv"]


def test_split_job_without_catalogue(tmp_path, capsys):
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text("drawing_id,artwork_id\nd1,a1\nd2,a2\nd3,a3\n")
    out = tmp_path / "out"
    assert split_main([f"out={out}", f"pairs_csv={pairs_csv}", "n_folds=3"]) == 0
    assert "no catalogue" in capsys.readouterr().out
    for k in range(3):
        fold = pd.read_csv(out / "folds" / f"fold_{k:02d}.csv", dtype=str, keep_default_na=False)
        assert sorted(fold["set"]) == ["test", "train", "val"]


def test_split_job_unknown_ids(tmp_path, capsys):
    out, _ = _job_fixture(tmp_path)
    pairs_csv = tmp_path / "bad.csv"
    pairs_csv.write_text(
        "drawing_id,artwork_id,pair\nd1,a1,True\nghost_drawing,a2,True\n"
        "d3,ghost_artwork,True\nother_ghost,a4,True\n"
    )
    assert split_main([f"out={out}", f"pairs_csv={pairs_csv}"]) == 1
    err = capsys.readouterr().err
    for name in ("ghost_drawing", "other_ghost", "ghost_artwork"):
        assert name in err
    assert not (out / "folds").exists()
    with pytest.raises(PairsError) as info:
        split.run(SplitConfig(out=str(out), pairs_csv=str(pairs_csv)))
    assert "2 unknown drawing id(s): ghost_drawing, other_ghost" in str(info.value)
    assert "1 unknown artwork id(s): ghost_artwork" in str(info.value)


def test_split_job_config_errors(tmp_path):
    assert split_main([f"out={tmp_path}", "train=0.9"]) == 2
    assert split_main([f"out={tmp_path}", "folds=3"]) == 2
    assert split_main([f"out={tmp_path}"]) == 1  # no pairs_csv


def _with_unpaired_drawing(tmp_path):
    """The job fixture plus a catalogued drawing d5 that is in no pair."""
    out, pairs_csv = _job_fixture(tmp_path)
    catalogue = cat.read_catalogue(out)
    d1 = catalogue[catalogue["id"] == "d1"].iloc[0].to_dict()
    d5 = dict(d1, id="d5", path=d1["path"].replace("d1", "d5"))
    cat.write_catalogue(pd.concat([catalogue, pd.DataFrame([d5])], ignore_index=True), out)
    return out, pairs_csv


def test_split_carries_negatives_into_each_fold_with_their_drawing(tmp_path, capsys):
    """Components {d1,d2,a1,a2}, {d3,a3}, {d4,a4}: each non-match takes the set of its drawing's
    component in each fold (the artwork may sit in another set); d5 is in no pair and is dropped
    and counted; a repeated row counts once."""
    out, pairs_csv = _with_unpaired_drawing(tmp_path)
    negatives_csv = tmp_path / "negatives.csv"
    negatives_csv.write_text(
        "drawing_id,artwork_id,note\nd1,a3,x\nd2,a4,x\nd3,a2,x\nd4,a1,x\nd5,a1,x\nd1,a3,again\n"
    )
    keys = [f"out={out}", f"pairs_csv={pairs_csv}", "n_folds=4"]
    assert split_main([*keys, f"negatives_csv={negatives_csv}"]) == 0
    printed = capsys.readouterr().out
    assert "non-matches: 5 read, 4 carried into every fold" in printed
    assert "1 dropped (drawing in no pair)" in printed
    summary = json.loads((out / "folds" / "summary.json").read_text())
    for k in range(4):
        fold = pd.read_csv(out / "folds" / f"fold_{k:02d}.csv", dtype=str, keep_default_na=False)
        set_of = dict(zip(fold["drawing_id"], fold["set"], strict=False))
        path = out / "folds" / f"negatives_{k:02d}.csv"
        assert path.read_text().splitlines()[0] == "drawing_id,artwork_id,set"
        placed = pd.read_csv(path, dtype=str, keep_default_na=False)
        expected = [("d1", "a3"), ("d2", "a4"), ("d3", "a2"), ("d4", "a1")]
        assert list(zip(placed["drawing_id"], placed["artwork_id"], strict=True)) == expected
        assert list(placed["set"]) == [set_of[d] for d, _a in expected]
        assert placed["set"].iloc[0] == placed["set"].iloc[1]  # d1, d2: one component
        counts = {s: list(placed["set"]).count(s) for s in ("train", "val", "test")}
        assert summary[k]["negatives"] == counts

    # split again without the key: no negatives file is left behind
    assert split_main(keys) == 0
    assert not list((out / "folds").glob("negatives_*.csv"))
    assert "negatives" not in json.loads((out / "folds" / "summary.json").read_text())[0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("d3,a1\nd1,a1\n", "1 non-match(es) that are also kept pairs: d1 - a1"),
        ("d1,a3\nghost,a1\n", "1 unknown drawing id(s): ghost"),
        ("a1,a3\n", "1 drawing_id(s) that are artworks: a1"),
        ("d1\n", "missing column(s) ['artwork_id']"),
    ],
)
def test_split_refuses_bad_negatives_before_writing(tmp_path, capsys, rows, message):
    out, pairs_csv = _job_fixture(tmp_path)
    negatives_csv = tmp_path / "negatives.csv"
    header = "drawing_id\n" if rows == "d1\n" else "drawing_id,artwork_id\n"
    negatives_csv.write_text(header + rows)
    keys = [f"out={out}", f"pairs_csv={pairs_csv}", f"negatives_csv={negatives_csv}"]
    assert split_main(keys) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (out / "folds").exists()

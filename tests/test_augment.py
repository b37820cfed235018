"""The augment job end to end on a tiny catalogue, with the shared local Ray instance."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drawmatch.augment.styles import STYLES, NeuralStyleParams
from drawmatch.data import catalogue
from drawmatch.jobs import augment
from drawmatch.jobs.augment import AugmentConfig
from drawmatch.runtime.ray_setup import RayConfig

from .conftest import make_image

DRAWINGS = [
    "2004_14-17_1013_BLG_R_C",
    "2004_6-9_1014_FRA_R_C",
    "2005_3-5_7_JPN_R_A",
    "2005_MS_8_USA_V_C",
]


def _row(id_: str, collection: str, root: str, path: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": id_,
        "collection": collection,
        "root": root,
        "path": path,
        "sha256": "0" * 64,
        "width": 80,
        "height": 60,
        "status": "ok",
        "error": None,
        "parent_id": None,
        "style": "original",
        "duplicate_of": None,
        "verso": False,
        "year": None,
        "country_iso3": None,
        "artist": None,
        "title": None,
    }
    row.update(extra)
    return row


@pytest.fixture
def tiny_out(tmp_path: Path) -> Path:
    drawings = tmp_path / "scans"
    artworks = tmp_path / "artworks"
    rows = []
    for i, name in enumerate(DRAWINGS):
        make_image(drawings / f"{name}.jpg", size=(80, 60), seed=i)
        rows.append(
            _row(
                name,
                "drawing",
                "drawings",
                f"{name}.jpg",
                year=int(name[:4]),
                country_iso3=name.split("_")[3],
                verso=name.split("_")[4] == "V",
            )
        )
    for j in range(2):
        make_image(artworks / f"art{j}.jpg", size=(60, 80), seed=10 + j)
        rows.append(
            _row(f"art{j}", "artwork", "artworks", f"art{j}.jpg", artist="A", title=f"T{j}")
        )
    out = tmp_path / "out"
    out.mkdir()
    cat = pd.DataFrame(rows)
    cat["year"] = cat["year"].astype("Int64")
    catalogue.write_catalogue(cat, out)
    catalogue.write_roots(out, {"drawings": str(drawings), "artworks": str(artworks)})
    pd.DataFrame(
        {"drawing_id": DRAWINGS[:2], "artwork_id": ["art0", "art1"], "keep": ["true", "true"]}
    ).to_csv(tmp_path / "pairs.csv", index=False)
    return out


def _config(out: Path, **kw: object) -> AugmentConfig:
    return AugmentConfig(
        out=str(out),
        pairs_csv=str(out.parent / "pairs.csv"),
        max_side=64,
        batch_size=2,
        ray=RayConfig(num_cpus=2),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_augment_paired_twice(ray_local, tiny_out: Path) -> None:
    before = catalogue.read_catalogue(tiny_out)
    result = augment.run(_config(tiny_out))
    assert (result.inputs, result.tasks, result.written, result.skipped, result.errors) == (
        2,
        10,
        10,
        0,
        0,
    )
    cat = catalogue.read_catalogue(tiny_out)
    assert len(cat) == len(before) + 2 * len(STYLES)
    styled = cat[cat["parent_id"].notna()]
    assert set(styled["parent_id"]) == set(DRAWINGS[:2])
    assert set(styled["style"]) == set(STYLES)
    assert set(styled["id"]) == {f"{d}__{s}" for d in DRAWINGS[:2] for s in STYLES}
    assert (styled["root"] == "out").all() and (styled["status"] == "ok").all()
    assert (styled["collection"] == "drawing").all()
    roots = catalogue.read_roots(tiny_out)
    paths = [Path(p) for p in catalogue.resolve_paths(styled, roots)]
    assert all(p.exists() for p in paths)
    # metadata inherited from the parent
    first = styled[styled["parent_id"] == DRAWINGS[0]]
    assert (first["year"] == 2004).all() and (first["country_iso3"] == "BLG").all()
    assert styled["duplicate_of"].isna().all() and not styled["verso"].any()
    assert (tiny_out / "augment_config.yaml").exists()

    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    cat_mtime = Path(catalogue.catalogue_path(tiny_out)).stat().st_mtime_ns
    again = augment.run(_config(tiny_out))
    assert (again.inputs, again.tasks, again.written, again.skipped) == (2, 0, 0, 10)
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes
    assert Path(catalogue.catalogue_path(tiny_out)).stat().st_mtime_ns == cat_mtime
    assert len(catalogue.read_catalogue(tiny_out)) == len(cat)

    # a lost file is redone, the others are not
    paths[0].unlink()
    third = augment.run(_config(tiny_out))
    assert (third.tasks, third.written, third.skipped) == (1, 1, 9)
    assert paths[0].exists()
    assert len(catalogue.read_catalogue(tiny_out)) == len(cat)


@pytest.mark.slow
def test_augment_all_records_errors(ray_local, tiny_out: Path) -> None:
    (tiny_out.parent / "artworks" / "art1.jpg").write_bytes(b"")
    result = augment.run(_config(tiny_out, select="all", styles=("gray",)))
    # 3 drawings that are not versos + 2 artworks
    assert (result.inputs, result.tasks, result.written, result.errors) == (5, 5, 4, 1)
    assert result.errors_by_reason == {"zero-byte file": 1}
    cat = catalogue.read_catalogue(tiny_out).set_index("id")
    assert cat.loc["art1__gray", "status"] == "error"
    assert cat.loc["art1__gray", "title"] == "T1"
    assert cat.loc["art0__gray", "collection"] == "artwork"
    assert "2005_MS_8_USA_V_C__gray" not in cat.index


def test_select_checks(tiny_out: Path) -> None:
    with pytest.raises(ValueError, match="pairs_csv"):
        augment.run(AugmentConfig(out=str(tiny_out)))
    # the config itself rejects unknown choices (ConfigError is a ValueError)
    with pytest.raises(ValueError, match="some"):
        augment.run(_config(tiny_out, select="some"))
    with pytest.raises(ValueError, match="sepia"):
        augment.run(_config(tiny_out, styles=("sepia",)))
    bad = tiny_out.parent / "bad_pairs.csv"
    bad.write_text("drawing_id,artwork_id\nnot_a_drawing,art0\n")
    with pytest.raises(ValueError, match="not_a_drawing"):
        augment.run(AugmentConfig(out=str(tiny_out), pairs_csv=str(bad)))
    cat = catalogue.read_catalogue(tiny_out)
    chosen, not_usable = augment.select_originals(cat, AugmentConfig(select="drawings"))
    assert sorted(chosen["id"]) == sorted(DRAWINGS[:3]) and not_usable == 0


def test_a_re_ingest_keeps_the_copies_and_augment_does_no_work_twice(ray_local, tmp_path: Path):
    """ingest -> augment -> ingest again -> augment: the second augment writes nothing, as the demo
    does when it is run twice; a parent whose content changed gets new copies."""
    from drawmatch.jobs import ingest
    from drawmatch.jobs.ingest import IngestConfig

    scans = tmp_path / "scans"
    names = DRAWINGS[:3]
    for i, name in enumerate(names):
        make_image(scans / f"{name}.jpg", size=(80, 60), seed=i)
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"drawing_id": names, "artwork_id": ["a"] * 3}).to_csv(pairs, index=False)
    out = tmp_path / "out"
    ingest_cfg = IngestConfig(out=str(out), drawings_root=str(scans))
    augment_cfg = AugmentConfig(out=str(out), styles=("gray", "pencil"), pairs_csv=str(pairs))

    ingest.run(ingest_cfg)
    first = augment.run(augment_cfg)
    assert (first.written, first.skipped) == (6, 0)

    ingest.run(ingest_cfg)
    cat = catalogue.read_catalogue(out)
    assert (cat["parent_id"].notna()).sum() == 6  # the copies are still catalogued
    second = augment.run(augment_cfg)
    assert (second.tasks, second.written, second.skipped) == (0, 0, 6)

    make_image(scans / f"{names[0]}.jpg", size=(80, 60), seed=99)  # new content
    ingest.run(ingest_cfg)
    third = augment.run(augment_cfg)
    assert (third.written, third.skipped) == (2, 4)
    cat = catalogue.read_catalogue(out)
    redone = cat[cat["parent_id"] == names[0]]
    parent_sha = cat.loc[cat["id"] == names[0], "sha256"].iloc[0]
    assert len(redone) == 2 and (redone["parent_sha256"] == parent_sha).all()


TINY_NEURAL = NeuralStyleParams(backbone="tiny", pretrained=False, size=32, steps=2)


def test_neural_references_follow_the_rule(tiny_out: Path) -> None:
    cat = catalogue.read_catalogue(tiny_out)
    pairs = pd.DataFrame({"drawing_id": [DRAWINGS[0], DRAWINGS[0]], "artwork_id": ["art0", "art1"]})
    everything = cat[catalogue.originals(cat)]
    refs = augment.neural_references(everything, cat, "auto", pairs, seed=0)
    assert refs[DRAWINGS[0]] in ("art0", "art1")  # one of its paired artworks
    assert refs[DRAWINGS[1]] in ("art0", "art1")  # no pair: a random artwork
    # artworks get a usable drawing: never the verso (DRAWINGS[3])
    usable_drawings = set(DRAWINGS[:3])
    assert {refs["art0"], refs["art1"]} <= usable_drawings
    assert DRAWINGS[3] not in refs.values()
    # the same choice every time; a drawing is never its own reference
    assert refs == augment.neural_references(everything, cat, "auto", pairs, seed=0)
    drawing_refs = augment.neural_references(everything, cat, "drawing", None, seed=0)
    assert all(ref != rid and ref in usable_drawings for rid, ref in drawing_refs.items())
    artwork_refs = augment.neural_references(everything, cat, "artwork", None, seed=5)
    assert set(artwork_refs.values()) <= {"art0", "art1"}
    assert artwork_refs["art0"] == "art1" and artwork_refs["art1"] == "art0"


def test_style_augmenter_neural_on_a_plain_batch(tiny_out: Path, tmp_path: Path) -> None:
    from PIL import Image

    from drawmatch.augment.styles import StyleAugmenter

    roots = catalogue.read_roots(tiny_out)
    stage = StyleAugmenter(
        styles=("gray", "neural"), roots=roots, out_root=str(tmp_path), neural=asdict(TINY_NEURAL)
    )
    batch = {
        "id": np.array([DRAWINGS[0], DRAWINGS[1]], dtype=object),
        "collection": np.array(["drawing", "drawing"], dtype=object),
        "root": np.array(["drawings", "drawings"], dtype=object),
        "path": np.array([f"{DRAWINGS[0]}.jpg", f"{DRAWINGS[1]}.jpg"], dtype=object),
        "ref_root": np.array(["artworks", None], dtype=object),
        "ref_path": np.array(["art0.jpg", None], dtype=object),
    }
    out = stage(batch)
    rows = pd.DataFrame(out).set_index("id")
    done = rows.loc[f"{DRAWINGS[0]}__neural"]
    assert done["status"] == "ok" and done["style"] == "neural"
    assert done["parent_id"] == DRAWINGS[0]
    with Image.open(tmp_path / done["path"]) as img:
        assert max(img.size) == 32  # the transfer's size
    missing = rows.loc[f"{DRAWINGS[1]}__neural"]
    assert missing["status"] == "error" and missing["error"] == "style reference: none chosen"
    assert rows.loc[f"{DRAWINGS[1]}__gray", "status"] == "ok"  # the other style is unaffected


@pytest.mark.slow
def test_augment_writes_and_skips_neural_copies(ray_local, tiny_out: Path) -> None:
    config = _config(tiny_out, styles=("gray", "neural"), neural=TINY_NEURAL)
    result = augment.run(config)
    assert (result.inputs, result.tasks, result.written, result.errors) == (2, 4, 4, 0)
    cat = catalogue.read_catalogue(tiny_out)
    neural = cat[cat["style"] == "neural"]
    assert set(neural["parent_id"]) == set(DRAWINGS[:2])
    assert set(neural["id"]) == {f"{d}__neural" for d in DRAWINGS[:2]}
    assert (neural["status"] == "ok").all() and (neural["collection"] == "drawing").all()
    paths = [Path(p) for p in catalogue.resolve_paths(neural, catalogue.read_roots(tiny_out))]
    assert all(p.exists() for p in paths)
    again = augment.run(config)
    assert (again.tasks, again.written, again.skipped) == (0, 0, 4)
    paths[0].unlink()
    third = augment.run(config)
    assert (third.tasks, third.written, third.skipped) == (1, 1, 3)
    assert paths[0].exists()

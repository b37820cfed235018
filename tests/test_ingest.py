"""The ingest job end to end on a tiny tree of drawings and artworks, plus its helpers."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from drawmatch.core.config import load_config
from drawmatch.data import catalogue
from drawmatch.jobs import ingest
from drawmatch.jobs.ingest import IngestConfig
from tests.conftest import embed_index_search, make_image

DUERER = "Albrecht_Du╠êrer"  # as the folder is named in the real collection

# --- artist names -----------------------------------------------------------------------------


def test_artist_names():
    assert ingest.artist_from_folder(DUERER) == "Albrecht Dürer"
    assert ingest.artist_from_folder("Vincent_van_Gogh") == "Vincent van Gogh"
    assert ingest.artist_from_folder("Henri_de_Toulouse-Lautrec") == "Henri de Toulouse-Lautrec"
    assert ingest.artist_from_folder("others") is None
    assert ingest.artist_from_folder(None) is None
    # correct non-ASCII names are left alone
    assert ingest.clean_artist_name("Joan_Miró") == "Joan Miró"
    assert ingest.repair_mojibake("DÃ¼rer") == "Dürer"
    assert ingest.repair_mojibake("plain") == "plain"


def test_artist_names_of_the_real_catalogue(imaj_dir):
    with open(imaj_dir / "artworks_catalogue.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8577
    artists = set()
    for row in rows:
        name = ingest.artist_from_folder(row["artist"])
        if row["artist"] == "others":
            assert name is None
            continue
        assert name, row
        assert "_" not in name and "╠" not in name and name == name.strip(), name
        artists.add(name)
    assert len(artists) == 50  # 50 artists' folders, none lost or merged
    assert "Albrecht Dürer" in artists
    assert "Pierre-Auguste Renoir" in artists


# --- end to end -------------------------------------------------------------------------------


def _exif_rotated(path: Path) -> None:
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif)


@pytest.fixture
def tree(tmp_path):
    """12 drawings (one in an unreadable folder), 6 artworks, user tables."""
    d = tmp_path / "drawings"
    a = tmp_path / "artworks"
    make_image(d / "2004_14-17_1013_BLG_R_C.jpg", seed=1)
    make_image(d / "2004_14-17_1013_BLG_V_C.jpg", seed=2)
    make_image(d / "1999_6-9_47_0011_R-V_C.png", seed=3, fmt="PNG")
    make_image(d / "batch" / "1998_18-25_3_0035 .jpg", seed=4)  # stray space
    make_image(d / "2000_18-25_0054_UKR_b_B_C.jpg", seed=5)  # does not parse
    make_image(d / "copy" / "2004_14-17_1013_BLG_R_C.jpg", seed=6)  # same id
    shutil.copy(d / "2004_14-17_1013_BLG_R_C.jpg", d / "2001_14-17_0178_FRA_R_C.jpg")  # same bytes
    (d / "zero.jpg").write_bytes(b"")
    full = make_image(tmp_path / "full.jpg", size=(120, 90), seed=7).read_bytes()
    (d / "2002_14-17_0644_ROU_R_C.jpg").write_bytes(full[: len(full) // 2])
    (d / "notes.jpg").write_text("not an image")
    (d / "readme.txt").write_text("ignored: not an image extension")
    make_image(d / "UPPER.JPG", seed=8)
    make_image(d / "locked" / "2004_14-17_9999_FRA_R_C.jpg", seed=9)

    make_image(a / DUERER / f"{DUERER}_1.jpg", seed=10)
    make_image(a / "Vincent_van_Gogh" / "Vincent_van_Gogh_368.jpg", seed=11)
    _exif_rotated(a / "Edvard_Munch" / "Edvard_Munch_1.jpg")
    make_image(a / "others" / "african-leopard.jpg", seed=12)
    make_image(a / "loose_object.png", seed=13, fmt="PNG")
    make_image(a / "big.png", size=(200, 200), seed=14, fmt="PNG")  # a bomb under the limit below

    meta = tmp_path / "artworks.csv"
    meta.write_text(
        "file,title,source\n"
        "image_data/Vincent_van_Gogh/Vincent_van_Gogh_368.jpg,The Starry Night,wikiart\n"
        "not_here.jpg,Nothing,nowhere\n"
    )
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("collection_code,iso3166_alpha3,country\nBLG,BGR,Bulgaria\n")
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(
        "file_name,year,side,country_code\n"
        "2000_18-25_0054_UKR_b_B_C.jpg,2000,V,UKR\n"
        "nonexistent.jpg,1999,,\n"
    )
    return tmp_path


def _config(tree: Path, out: str) -> IngestConfig:
    return IngestConfig(
        out=str(tree / out),
        drawings_root=str(tree / "drawings"),
        artworks_root=str(tree / "artworks"),
        artworks_metadata_csv=str(tree / "artworks.csv"),
        country_aliases_csv=str(tree / "aliases.csv"),
        overrides_csv=str(tree / "overrides.csv"),
        max_image_pixels=20_000,
    )


@pytest.fixture
def locked_dir(monkeypatch, tree):
    """Make `drawings/locked` unreadable (chmod does not stop root, so fail its listing)."""
    locked = str(tree / "drawings" / "locked")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return locked


def test_ingest_end_to_end(ray_local, tree, locked_dir, capsys):
    config = _config(tree, "out")
    result = ingest.run(config)
    out = Path(config.out)
    df = pd.read_parquet(out / "catalogue.parquet")

    # every file found is a row; rows in = ok + errors
    assert len(df) == 17 == result.rows
    assert (result.drawings, result.artworks) == (11, 6)
    assert result.ok + result.errors == result.rows
    assert (result.ok, result.errors) == (12, 5)
    assert list(df.columns[: len(catalogue.CORE_COLUMNS)]) == catalogue.CORE_COLUMNS
    for col in catalogue.DRAWING_COLUMNS + catalogue.ARTWORK_COLUMNS:
        assert col in df.columns
    assert df["id"].is_unique
    assert "readme" not in set(df["id"])
    assert set(df["style"]) == {"original"} and df["parent_id"].isna().all()

    by_id = df.set_index("id")
    errors = df[df["status"] == "error"].set_index("path")["error"].to_dict()
    assert errors["zero.jpg"] == "zero-byte file"
    assert errors["2002_14-17_0644_ROU_R_C.jpg"] == "truncated"
    assert errors["notes.jpg"] == "not an image"
    assert errors["big.png"] == "decompression bomb"
    assert errors["copy/2004_14-17_1013_BLG_R_C.jpg"].startswith("duplicate id")
    assert by_id.loc["2004_14-17_1013_BLG_R_C~2", "path"] == "copy/2004_14-17_1013_BLG_R_C.jpg"
    assert pd.isna(by_id.loc["zero", "width"]) and pd.isna(by_id.loc["big", "height"])
    assert (df.loc[df["status"] == "ok", "width"] > 0).all()

    # EXIF orientation 6: 60x40 stored, 40x60 upright
    munch = by_id.loc["Edvard_Munch_1"]
    assert (munch["width"], munch["height"]) == (40, 60)

    # equal bytes: flagged on the later row in (collection, path) order, both stay ok
    first, second = "2001_14-17_0178_FRA_R_C", "2004_14-17_1013_BLG_R_C"
    assert by_id.loc[second, "duplicate_of"] == first
    assert pd.isna(by_id.loc[first, "duplicate_of"])
    assert by_id.loc[second, "status"] == "ok"
    assert by_id.loc[first, "sha256"] == by_id.loc[second, "sha256"]

    # drawings metadata from names, aliases and overrides
    row = by_id.loc["2004_14-17_1013_BLG_R_C"]
    assert (row["year"], row["age_group"], row["country_code"], row["country_iso3"]) == (
        2004,
        "14-17",
        "BLG",
        "BGR",
    )
    assert (row["side"], row["quality"], row["scan_uid"], row["verso"]) == ("R", "C", "1013", False)
    assert by_id.loc["2004_14-17_1013_BLG_V_C", "verso"]
    assert by_id.loc["1999_6-9_47_0011_R-V_C", "verso"]  # a recto-verso scan shows the back
    assert by_id.loc["1999_6-9_47_0011_R-V_C", "side"] == "R-V"
    stray = by_id.loc["1998_18-25_3_0035"]
    assert stray["path"] == "batch/1998_18-25_3_0035 .jpg" and stray["name_parsed"]
    assert stray["scan_uid"] == "0035" and pd.isna(stray["country_code"])
    fixed = by_id.loc["2000_18-25_0054_UKR_b_B_C"]  # unknown side `B`, corrected by an override
    assert fixed["name_parsed"] and "unknown side 'B'" in fixed["name_flags"]
    assert (fixed["year"], fixed["side"], fixed["country_iso3"], fixed["verso"]) == (
        2000,
        "V",
        "UKR",
        True,
    )
    assert not by_id.loc["UPPER", "name_parsed"] and pd.isna(by_id.loc["UPPER", "side"])
    assert int(df["verso"].sum()) == 3 == result.versos
    assert pd.isna(row["name_flags"]) and "no country" in stray["name_flags"]

    # artworks
    assert by_id.loc[f"{DUERER}_1", "artist"] == "Albrecht Dürer"
    assert by_id.loc[f"{DUERER}_1", "path"] == f"{DUERER}/{DUERER}_1.jpg"
    gogh = by_id.loc["Vincent_van_Gogh_368"]
    assert (gogh["artist"], gogh["title"], gogh["source"]) == (
        "Vincent van Gogh",
        "The Starry Night",
        "wikiart",
    )
    assert pd.isna(by_id.loc["african-leopard", "artist"])
    assert pd.isna(by_id.loc["loose_object", "artist"])
    artworks = df[df["collection"] == "artwork"]
    assert set(artworks["root"]) == {"artworks"} and not artworks["verso"].any()
    assert artworks["name_parsed"].isna().all() and artworks["year"].isna().all()
    assert set(df.loc[df["collection"] == "drawing", "root"]) == {"drawings"}

    # stable types
    assert str(df["year"].dtype) == "Int64" and str(df["width"].dtype) == "Int64"
    assert df["verso"].dtype == bool

    # deterministic order
    keys = list(zip(df["collection"], df["path"], strict=True))
    assert keys == sorted(keys)

    # side files
    roots = json.loads((out / "roots.json").read_text())
    assert roots == {
        "drawings": str((tree / "drawings").resolve()),
        "artworks": str((tree / "artworks").resolve()),
    }
    id_map = pd.read_csv(out / "id_to_path.csv", dtype=str, keep_default_na=False)
    assert list(id_map.columns) == ["id", "path", "root"]
    assert id_map["id"].tolist() == df["id"].tolist()
    for rid, path, root in zip(id_map["id"], id_map["path"], id_map["root"], strict=True):
        assert os.path.isfile(os.path.join(roots[root], path)), rid
    assert load_config(IngestConfig, out / "ingest_config.yaml") == config

    summary = json.loads((out / "ingest_summary.json").read_text())
    assert summary["rows"] == 17 and summary["ok"] == 12 and summary["errors"] == 5
    assert summary["by_collection"] == {"artwork": 6, "drawing": 11}
    assert summary["errors_by_reason"] == {
        "decompression bomb": 1,
        "duplicate id": 1,
        "not an image": 1,
        "truncated": 1,
        "zero-byte file": 1,
    }
    assert summary["by_side"] == {"R": 4, "R-V": 1, "V": 2, "null": 4}
    assert summary["by_country_iso3"] == {"BGR": 3, "FRA": 1, "ROU": 1, "UKR": 1, "null": 5}
    assert summary["by_year"]["2004"] == 3 and summary["by_year"]["null"] == 3
    assert summary["versos"] == 3
    assert summary["unparsed_names"] == 3  # UPPER, notes, zero
    assert summary["duplicate_ids"] == 1 and summary["duplicate_content"] == 1
    assert summary["unreadable_directories"] == [
        {"root": "drawings", "path": "locked", "reason": "Permission denied"}
    ]
    assert summary["overrides"]["applied"] == 1
    assert summary["overrides"]["unmatched"] == ["nonexistent.jpg"]
    assert summary["artworks_metadata"]["matched"] == 1
    assert summary["unknown_country_codes"] == {}

    printed = capsys.readouterr().out
    assert "17 files" in printed and "5 in error" in printed


def test_ingest_is_deterministic(ray_local, tree, locked_dir):
    first = pd.read_parquet(ingest.run(_config(tree, "out1")).catalogue_path)
    second = pd.read_parquet(ingest.run(_config(tree, "out2")).catalogue_path)
    pd.testing.assert_frame_equal(first, second)


def test_ingest_drawings_only_unknown_country_counted(ray_local, tmp_path):
    d = tmp_path / "d"
    make_image(d / "2004_14-17_1013_QQQ_R_C.jpg", seed=1)
    make_image(d / "2005_14-17_1014_FRA_V_C.jpg", seed=2)
    result = ingest.run(IngestConfig(out=str(tmp_path / "out"), drawings_root=str(d)))
    assert (result.rows, result.ok, result.artworks, result.versos) == (2, 2, 0, 1)
    summary = json.loads(Path(result.summary_path).read_text())
    assert summary["unknown_country_codes"] == {"QQQ": 1}
    assert json.loads((tmp_path / "out" / "roots.json").read_text()) == {
        "drawings": str(d.resolve())
    }


def test_ingest_rejects_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="drawings_root"):
        ingest.run(IngestConfig(out=str(tmp_path / "out")))
    with pytest.raises(FileNotFoundError, match="drawings_root"):
        ingest.run(IngestConfig(out=str(tmp_path / "out"), drawings_root=str(tmp_path / "nope")))
    d = tmp_path / "d"
    d.mkdir()
    bad = tmp_path / "overrides.csv"
    bad.write_text("file_name,colour\na.jpg,red\n")
    with pytest.raises(ValueError, match="colour"):
        ingest.run(
            IngestConfig(out=str(tmp_path / "out"), drawings_root=str(d), overrides_csv=str(bad))
        )
    assert not (tmp_path / "out" / "catalogue.parquet").exists()


# --- styled copies and versos by name -----------------------------------------------------------

PARENT = "2004_14-17_1013_BLG_R_C"
# verso spellings of scan 1014 (one file each) and what ingest must read
VERSO_FILES = [
    "2004_14-17_1014_BLG_V_C.jpg",
    "2004_14-17_1015_BLG_v_C.jpg",
    "2004_14-17_1016_BLG_a-V_C.jpg",
    "2004_14-17_1017_BLG-V_C.jpg",
    "2004_14-17_1018_BLG_R-V_C.jpg",
    "2004_14-17_1019_BLG_RV_C.jpg",
    "2004_14-17_1020_BLG_R_V_C.jpg",
    "2004_14-17_1021_BLG_V_0001_A_C.jpg",
    "2004_14-17_1022_BLG_V_C_crop1.jpg",
    "2004_14-17_1023_BLG_V_C.jpg.jpg",
    "2004_14-17_1024_BLG_painting_V_C.jpg",  # the rest of the name does not parse
    "scan_of_the_back_V.jpg",  # not an IMAJ name at all
    "2004_14-17_1025_BLG_V_C_gray.jpg",  # a styled copy of a verso is a verso too
]
RECTO_FILES = [
    f"{PARENT}.jpg",
    f"{PARENT}_oil.jpg",
    f"{PARENT}_pencil_gray.jpg",
    f"{PARENT}_water.jpg",
    "2005_6-9_0042_FRA_R_C_texture.jpg",  # its parent is not in the collection
    "2010_14-17_0230a_a_R_C.jpg",
    "2011_17-25_0312_KAZ_01_C.jpg",
    "1985_14-16_0007B_FRA_R_C.jpg",
]


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def test_ingest_styled_copies_and_verso_names(ray_local, tmp_path):
    d = tmp_path / "d"
    for i, name in enumerate(VERSO_FILES + RECTO_FILES):
        make_image(d / name, seed=100 + i)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(f"file_name,side\n{VERSO_FILES[0]},R\n")  # cannot make a verso public
    result = ingest.run(
        IngestConfig(out=str(tmp_path / "out"), drawings_root=str(d), overrides_csv=str(overrides))
    )
    df = pd.read_parquet(result.catalogue_path).set_index("id")
    assert len(df) == len(VERSO_FILES) + len(RECTO_FILES) and result.errors == 0

    versos = {_stem(n) for n in VERSO_FILES}
    assert set(df.index[df["verso"]]) == versos and result.versos == len(VERSO_FILES)
    assert df.loc["2004_14-17_1014_BLG_V_C", "side"] == "R"  # as overridden, still private
    assert df.loc["2004_14-17_1018_BLG_R-V_C", "side"] == "R-V"
    assert df.loc["2004_14-17_1019_BLG_RV_C", "side"] == "R-V"
    assert df.loc["2004_14-17_1020_BLG_R_V_C", "side"] == "R-V"
    assert df.loc["2004_14-17_1016_BLG_a-V_C", "sub_drawing"] == "a"
    assert df.loc["2004_14-17_1023_BLG_V_C.jpg", "scan_uid"] == "1023"  # id: the file stem
    partly = df.loc["2004_14-17_1024_BLG_painting_V_C"]
    assert not partly["name_parsed"] and partly["side"] == "V" and partly["year"] == 2004

    # styled copies of the collection: parent, style, the parent's metadata
    for name, style in (("oil", "oil"), ("pencil_gray", "pencil"), ("water", "watercolor")):
        row = df.loc[f"{PARENT}_{name}"]
        assert (row["parent_id"], row["style"]) == (PARENT, style)
        assert (row["year"], row["age_group"], row["country_code"], row["scan_uid"]) == (
            2004,
            "14-17",
            "BLG",
            "1013",
        )
        assert row["side"] == "R" and row["name_parsed"] and not row["verso"]
        assert "styled copy" in row["name_flags"]
    assert df.loc["2004_14-17_1025_BLG_V_C_gray", "style"] == "gray"
    orphan = df.loc["2005_6-9_0042_FRA_R_C_texture"]
    assert pd.isna(orphan["parent_id"]) and orphan["style"] == "texture"
    assert "not in the catalogue" in orphan["name_flags"]
    assert (orphan["year"], orphan["age_group"], orphan["country_code"]) == (2005, "6-9", "FRA")
    parent = df.loc[PARENT]
    assert parent["style"] == "original" and pd.isna(parent["parent_id"])
    assert pd.isna(parent["name_flags"])

    # the zoo: values read off the names, deviations flagged
    sub = df.loc["2010_14-17_0230a_a_R_C"]
    assert (sub["scan_uid"], sub["sub_drawing"]) == ("0230a", "a") and pd.isna(sub["country_code"])
    kaz = df.loc["2011_17-25_0312_KAZ_01_C"]
    assert (kaz["age_group_raw"], kaz["country_iso3"], kaz["quality"]) == ("17-25", "KAZ", "C")
    assert pd.isna(kaz["side"])
    assert (
        pd.isna(kaz["age_group"]) and "17-25" in kaz["name_flags"] and "'01'" in kaz["name_flags"]
    )
    old = df.loc["1985_14-16_0007B_FRA_R_C"]
    assert (old["year"], old["age_group_raw"], old["age_group"]) == (1985, "14-16", "14-17")
    assert "implausible year" in old["name_flags"]
    standard = {PARENT, "2004_14-17_1014_BLG_V_C", "2004_14-17_1018_BLG_R-V_C"}
    assert set(df.index[df["name_flags"].isna()]) == standard  # every other name is flagged

    summary = json.loads(Path(result.summary_path).read_text())
    assert summary["styled_copies"] == 5
    assert summary["flagged_names"] == len(df) - len(standard)
    assert summary["versos"] == len(VERSO_FILES)


# --- end to end: no verso reaches an embedding, an index or a top-k file ------------------------

# a verso in any spelling, written independently of the parser (as in tests/test_imaj.py)
_VERSO_FIELD = re.compile(r"(?:^|_)\s*(?:[A-Za-z0-9]*-[Vv]|[Rr]-?[Vv]|[Vv])\s*(?:_|$)")


def _one_name_per_shape(imaj_dir: Path) -> list[str]:
    """One real raw file name for each shape of name (digits masked) in the variants list."""
    seen: dict[str, str] = {}
    for line in (imaj_dir / "raw_filename_variants.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            seen.setdefault(re.sub(r"\d", "9", line), line)
    return sorted(seen.values())


@pytest.mark.slow
def test_no_verso_reaches_embeddings_index_or_top_k(
    ray_local, tmp_path, imaj_dir, capsys, monkeypatch
):
    from drawmatch.cli import main
    from drawmatch.jobs import search
    from drawmatch.jobs.search import SearchConfig
    from drawmatch.retrieval import queries

    names = sorted(set(_one_name_per_shape(imaj_dir) + VERSO_FILES + RECTO_FILES))
    d, a = tmp_path / "drawings", tmp_path / "artworks"
    for i, name in enumerate(names):
        make_image(d / name, size=(40, 40), seed=i)
    for i in range(4):
        make_image(a / "Claude_Monet" / f"Claude_Monet_{i}.jpg", size=(40, 40), seed=1000 + i)
    out = tmp_path / "out"
    result = ingest.run(IngestConfig(out=str(out), drawings_root=str(d), artworks_root=str(a)))
    assert result.errors == 0
    df = pd.read_parquet(result.catalogue_path)
    drawings = df[df["collection"] == "drawing"]
    versos = set(drawings.loc[drawings["verso"], "id"])
    by_name = {_stem(n).strip() for n in names if _VERSO_FIELD.search(_stem(n))}
    assert versos == by_name and len(versos) >= len(VERSO_FILES) + 3

    embedded, indexed, topk = embed_index_search(out)
    queried = set(topk["drawing_id"]) | set(topk["artwork_id"])
    assert not versos & embedded and not versos & indexed and not versos & queried
    originals = set(
        drawings.loc[
            ~drawings["verso"] & drawings["parent_id"].isna() & (drawings["style"] == "original"),
            "id",
        ]
    )
    assert originals <= embedded and set(topk["drawing_id"]) == originals  # rectos do go through
    assert f"{PARENT}_oil" not in set(topk["drawing_id"])  # a styled copy is not a query

    # a file whose name states a verso is refused before it is embedded, by file or by id
    calls: list[str] = []
    real_embed = queries.embed_image_file
    monkeypatch.setattr(
        queries, "embed_image_file", lambda *args: calls.append("embed") or real_embed(*args)
    )
    for name in VERSO_FILES:
        with pytest.raises(ValueError, match="states a verso"):
            search.run(SearchConfig(out=str(out), query=str(d / name)))
    with pytest.raises(ValueError, match="verso"):
        search.run(SearchConfig(out=str(out), query="2004_14-17_1016_BLG_a-V_C"))
    assert calls == []
    capsys.readouterr()
    assert main(["search", f"out={out}", "--query", str(d / VERSO_FILES[2])]) == 1
    assert "states a verso" in capsys.readouterr().err
    recto = search.run(SearchConfig(out=str(out), query=str(d / f"{PARENT}.jpg"), k=2))
    assert len(recto) == 2 and calls == ["embed"]


# --- duplicates: zero-byte files, content order, ids shared by both collections -----------------


def test_duplicates_are_deterministic_and_ids_are_unique_across_collections(ray_local, tmp_path):
    """Zero-byte files are errors, never content duplicates of each other; `duplicate_of` points
    to the first id in sorted order whatever the paths; an id shared by a drawing and an artwork
    keeps the artwork and makes the drawing an error row naming both files, and evaluate then
    refuses a pair that uses the artwork as a drawing."""
    from drawmatch.data.pairs import PairsError
    from drawmatch.jobs import evaluate
    from drawmatch.jobs.evaluate import EvaluateConfig

    d, a = tmp_path / "drawings", tmp_path / "artworks"
    (d / "aa").mkdir(parents=True)
    (d / "aa" / "empty1.jpg").write_bytes(b"")
    (d / "empty2.jpg").write_bytes(b"")
    make_image(d / "aa" / "zz_copy.jpg", seed=1)  # first by path, last by id
    shutil.copy(d / "aa" / "zz_copy.jpg", d / "mm_original.jpg")
    make_image(d / "shared.jpg", seed=2)
    make_image(a / "shared.jpg", seed=3)
    make_image(a / "art.jpg", seed=4)
    out = tmp_path / "out"
    result = ingest.run(IngestConfig(out=str(out), drawings_root=str(d), artworks_root=str(a)))
    df = catalogue.read_catalogue(out).set_index("id")

    for zero in ("empty1", "empty2"):
        assert df.loc[zero, "status"] == "error" and df.loc[zero, "error"] == "zero-byte file"
        assert pd.isna(df.loc[zero, "duplicate_of"])
    assert df.loc["zz_copy", "duplicate_of"] == "mm_original"
    assert pd.isna(df.loc["mm_original", "duplicate_of"])
    assert result.duplicate_content == 1

    assert df.loc["shared", "collection"] == "artwork" and df.loc["shared", "status"] == "ok"
    clash = df.loc["shared~2"]
    assert clash["collection"] == "drawing" and clash["status"] == "error"
    assert clash["error"] == (
        "id in both collections: 'shared' names the drawing drawings/shared.jpg and the "
        "artwork artworks/shared.jpg; rename one of them"
    )
    summary = json.loads((out / ingest.SUMMARY_FILE).read_text())
    assert summary["errors_by_reason"]["id in both collections"] == 1

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("drawing_id,artwork_id\nshared,art\nmm_original,art\nmm_original,zz_copy\n")
    config = EvaluateConfig(out=str(out), pairs_csv=str(pairs))
    with pytest.raises(PairsError) as err:
        evaluate.evaluation_pairs(config, catalogue.read_catalogue(out))
    message = str(err.value)
    assert "1 drawing_id(s) that are artworks: shared" in message
    assert "1 artwork_id(s) that are drawings: zz_copy" in message


def test_mark_duplicates_ignores_error_rows_and_file_order():
    def row(id_, sha, status="ok", collection="drawing"):
        return dict(
            id=id_, sha256=sha, status=status, error=None, collection=collection,
            root="drawings", path=f"{id_}.jpg", duplicate_of=None,
        )  # fmt: skip

    rows = [row("c", "h1"), row("b", "h1"), row("x", "h2", "error"), row("y", "h2", "error")]
    rows.append(row("a", "h1"))
    _ids, content = ingest._mark_duplicates(rows)
    by_id = {r["id"]: r for r in rows}
    assert content == [{"id": "b", "duplicate_of": "a"}, {"id": "c", "duplicate_of": "a"}]
    assert by_id["a"]["duplicate_of"] is None
    assert by_id["x"]["duplicate_of"] is None and by_id["y"]["duplicate_of"] is None

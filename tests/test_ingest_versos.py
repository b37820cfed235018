"""Versos named outside the IMAJ convention never reach a selection, a thumbnail, an embedding, an
index, a search result or an export: ingest marks them from their names (property-based), and the
jobs downstream leave them out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drawmatch.data import catalogue
from drawmatch.jobs import ingest
from drawmatch.jobs.ingest import IngestConfig
from tests.conftest import embed_index_search, make_image
from tests.verso_strategies import extensions, ordinary_stems, verso_stems


def _write(root: Path, stems: list[str], exts: list[str], first_seed: int) -> list[str]:
    """Tiny images named `<n>_<stem><ext>` (the number keeps ids unique); their ids."""
    ids = []
    for n, (stem, ext) in enumerate(zip(stems, exts, strict=True)):
        ident = f"{first_seed + n}_{stem}"
        fmt = "PNG" if ext.lower() == ".png" else "JPEG"
        make_image(root / f"{ident}{ext}", size=(16, 16), seed=first_seed + n, fmt=fmt)
        ids.append(ident)
    return ids


def _selected(df: pd.DataFrame) -> set[str]:
    """Every id a shared selection lets through."""
    return (
        set(df.loc[catalogue.usable(df), "id"])
        | set(df.loc[catalogue.originals(df), "id"])
        | set(catalogue.query_ids(df))
        | set(catalogue.gallery_ids(df))
    )


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    versos=st.lists(st.tuples(verso_stems(), extensions), min_size=4, max_size=10),
    rectos=st.lists(st.tuples(ordinary_stems(), extensions), min_size=1, max_size=4),
)
def test_ingest_marks_every_verso_spelling(
    ray_local, versos: list[tuple[str, str]], rectos: list[tuple[str, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "d"
        verso_ids = _write(root, [s for s, _ in versos], [e for _, e in versos], 0)
        recto_ids = _write(root, [s for s, _ in rectos], [e for _, e in rectos], 100)
        make_image(root / "versos" / "0001.jpg", seed=200)  # a folder of versos
        result = ingest.run(IngestConfig(out=str(Path(tmp) / "out"), drawings_root=str(root)))
        df = pd.read_parquet(result.catalogue_path)
    assert result.rows == len(versos) + len(rectos) + 1 and result.errors == 0
    marked = set(df.loc[df["verso"], "id"])
    assert marked == {*verso_ids, "0001"} and result.versos == len(marked)
    assert not marked & _selected(df)
    assert set(catalogue.query_ids(df)) == set(recto_ids)


@pytest.mark.slow
def test_named_versos_reach_no_embedding_search_result_or_export(ray_local, tmp_path: Path):
    from drawmatch.data.annotations import AnnotationStore, db_path
    from drawmatch.data.renditions import rendition_path
    from drawmatch.jobs import export, search, thumbnails
    from drawmatch.jobs.export import ExportConfig
    from drawmatch.jobs.search import SearchConfig
    from drawmatch.jobs.thumbnails import ThumbnailsConfig

    d, a = tmp_path / "drawings", tmp_path / "artworks"
    verso_files = ["Verso.jpg", "back_verso.jpg", "IMG_0003 - BACK.png", "scanReverse2.jpg"]
    for i, name in enumerate([*verso_files, "versos/0005.jpg", "cat.jpg", "house_1.jpg"]):
        make_image(d / name, size=(32, 32), seed=i, fmt="PNG" if name.endswith("png") else "JPEG")
    for i in range(3):
        make_image(a / "Claude_Monet" / f"Claude_Monet_{i}.jpg", size=(32, 32), seed=50 + i)
    out = tmp_path / "out"
    result = ingest.run(IngestConfig(out=str(out), drawings_root=str(d), artworks_root=str(a)))
    versos = {"Verso", "back_verso", "IMG_0003 - BACK", "scanReverse2", "0005"}
    df = pd.read_parquet(result.catalogue_path).set_index("id")
    assert set(df.index[df["verso"]]) == versos

    shown = thumbnails.run(ThumbnailsConfig(out=str(out), sizes=(32,)))
    assert shown.images == len(df) - len(versos) and not shown.errors
    assert not any(Path(rendition_path(out, df.loc[v, "sha256"], 32)).exists() for v in versos)
    assert Path(rendition_path(out, df.loc["cat", "sha256"], 32)).exists()

    embedded, indexed, topk = embed_index_search(out)
    assert embedded and not versos & embedded and not versos & indexed
    assert set(topk["drawing_id"]) == {"cat", "house_1"}
    for name in verso_files:
        with pytest.raises(ValueError, match="verso"):
            search.run(SearchConfig(out=str(out), query=str(d / name)))

    store = AnnotationStore(db_path(out))
    for drawing in [*sorted(versos), "cat"]:
        store.add(drawing, "Claude_Monet_0", "match", "expert")
    exported = pd.read_csv(export.run(ExportConfig(out=str(out))).path)
    assert list(exported["drawing_id"]) == ["cat"]


def test_a_re_ingest_drops_the_style_copies_of_a_verso(ray_local, tmp_path: Path) -> None:
    """A catalogue written before a name was read as a verso may hold style copies of it: a
    re-ingest keeps the copies of unchanged rectos only."""
    d, out = tmp_path / "d", tmp_path / "out"
    make_image(d / "Verso.jpg", seed=1)
    make_image(d / "cat.jpg", seed=2)
    config = IngestConfig(out=str(out), drawings_root=str(d))
    old = pd.read_parquet(ingest.run(config).catalogue_path)
    old["verso"] = False  # as an older reading of the names left it
    copies = old.copy()
    copies["parent_id"], copies["parent_sha256"] = old["id"], old["sha256"]
    copies["id"] = old["id"] + "__gray"
    copies["root"], copies["path"], copies["style"] = "out", "styles/" + copies["id"], "gray"
    catalogue.write_catalogue(pd.concat([old, copies], ignore_index=True), str(out))

    again = catalogue.read_catalogue(str(out)).set_index("id")
    assert {"Verso__gray", "cat__gray"} <= set(again.index)
    ingest.run(config)
    df = catalogue.read_catalogue(str(out)).set_index("id")
    assert "Verso__gray" not in df.index and df.loc["Verso", "verso"]
    assert df.loc["cat__gray", "parent_id"] == "cat"  # a recto's copy is kept

    (d / "cat.jpg").unlink()  # a parent gone: its copies go too, the re-ingest goes through
    ingest.run(config)
    assert set(catalogue.read_catalogue(str(out))["id"]) == {"Verso"}

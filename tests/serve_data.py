"""A small output root for workbench tests, built without Ray: IMAJ-named drawings (one a verso,
one a style copy), artworks with artist and title, embeddings of two `tiny` models, their artwork
indexes, batch-search candidates and drawing neighbours."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import embeddings_dir, embeddings_table, write_model_info, write_part
from drawmatch.data.neighbours import candidates_path
from drawmatch.jobs import search, similar
from drawmatch.jobs.search import SearchConfig
from drawmatch.jobs.similar import SimilarConfig
from drawmatch.models.embedder import Embedder
from drawmatch.models.preprocess import load_eval_array
from drawmatch.retrieval.artwork_index import build_faiss_index, index_dir, write_index
from tests.conftest import make_image

COUNTRIES = ["BLG", "FRA", "JPN"]
AGES = ["6-9", "10-13", "14-17"]
VERSO = "2004_14-17_0999_BLG_V_C"
STYLED = "2001_6-9_0000_BLG_R_A__oil"
MODELS = ({"pooling": "avg"}, {"pooling": "max"})


def drawing_name(i: int) -> str:
    return f"{2001 + i % 4}_{AGES[i % 3]}_{i:04d}_{COUNTRIES[i % 3]}_R_A"


def build(root: Path, n_drawings: int = 12, n_artworks: int = 10, demo: Path | None = None) -> Path:
    """Write the images and the output root under `root`; returns the output root. With `demo`
    (the bundled demo data folder), drawings and artworks are copies of its real images (under
    IMAJ-like names and synthetic metadata), artworks titled by their subject."""
    import shutil

    titles = [f"Work number {i}" for i in range(n_artworks)]
    if demo is None:
        drawings = [
            make_image(root / "d" / f"{drawing_name(i)}.png", (80, 60), seed=i, fmt="PNG")
            for i in range(n_drawings)
        ]
        artworks = [
            make_image(root / "a" / f"art{i:02d}.png", (70, 90), seed=100 + i, fmt="PNG")
            for i in range(n_artworks)
        ]
    else:
        (root / "d").mkdir(parents=True, exist_ok=True)
        (root / "a").mkdir(parents=True, exist_ok=True)
        sources = sorted((demo / "drawings").glob("*.jpg"))[:n_drawings]
        drawings = [
            Path(shutil.copy(src, root / "d" / f"{drawing_name(i)}.jpg"))
            for i, src in enumerate(sources)
        ]
        meta = pd.read_csv(demo / "artworks.csv").sort_values("id").head(n_artworks)
        artworks = [
            Path(shutil.copy(demo / f, root / "a" / f"art{i:02d}.jpg"))
            for i, f in enumerate(meta["file"])
        ]
        titles = [s.replace("_", " ").capitalize() for s in meta["subject"]]
    verso = make_image(root / "d" / f"{VERSO}.png", (80, 60), seed=500, fmt="PNG")
    make_image(root / "out" / "styled" / "oil" / f"{STYLED}.jpg", (80, 60), seed=0)
    rows = []
    for p in [*drawings, verso]:
        year, age, uid, country, side, quality = p.stem.split("_")
        rows.append(
            dict(
                id=p.stem,
                collection="drawing",
                root="drawings",
                path=p.name,
                year=int(year),
                age_group=age,
                age_group_raw=age,
                country_code=country,
                country_iso3=country,
                side=side,
                quality=quality,
                scan_uid=uid,
                verso=side == "V",
                parent_id=None,
                style="original",
            )
        )
    rows.append(
        dict(
            id=STYLED,
            collection="drawing",
            root="out",
            path=f"styled/oil/{STYLED}.jpg",
            year=2001,
            age_group="6-9",
            age_group_raw="6-9",
            country_code="BLG",
            country_iso3="BLG",
            side="R",
            quality="A",
            scan_uid="0000",
            verso=False,
            parent_id=drawings[0].stem,
            style="oil",
        )
    )
    for i, p in enumerate(artworks):
        rows.append(
            dict(
                id=p.stem,
                collection="artwork",
                root="artworks",
                path=p.name,
                artist=f"Painter {i % 3}",
                title=titles[i],
                source="test",
                verso=False,
                parent_id=None,
                style="original",
            )
        )
    table = pd.DataFrame(rows)
    files = {"drawings": root / "d", "artworks": root / "a", "out": root / "out"}
    table["sha256"] = [
        hashlib.sha256((files[r] / p).read_bytes()).hexdigest()
        for r, p in zip(table["root"], table["path"])
    ]
    table["status"] = "ok"
    table["error"] = None
    table["duplicate_of"] = None
    table["width"] = None
    table["height"] = None
    out = root / "out"
    cat.write_catalogue(table, out)
    cat.write_roots(out, {"drawings": str(root / "d"), "artworks": str(root / "a")})
    roots = cat.read_roots(out)
    paths = dict(zip(table["id"], cat.resolve_paths(table, roots)))
    embedded = [i for i in table["id"] if i != STYLED]  # the verso too: tests check it stays out
    for extra in MODELS:
        model = {"backbone": "tiny", "pretrained": False, "image_size": 32, **extra}
        embedder = Embedder(model)
        images = np.stack([load_eval_array(paths[i], 32) for i in embedded])
        emb = embedder.embed_images(images)
        directory = embeddings_dir(str(out), embedder.tag)
        sha = table.set_index("id").loc[embedded, "sha256"].tolist()
        write_part(
            directory, embeddings_table(embedded, sha, emb, embedder.tag, embedder.weights_hash)
        )
        write_model_info(
            directory,
            {
                "model_tag": embedder.tag,
                "weights_hash": embedder.weights_hash,
                "dim": embedder.dim,
                "model": model,
            },
        )
        gallery = cat.gallery_ids(table)
        gallery_emb = emb[[embedded.index(a) for a in gallery]]
        write_index(
            index_dir(str(out), embedder.tag),
            build_faiss_index(gallery_emb),
            gallery,
            {
                "model_tag": embedder.tag,
                "weights_hash": embedder.weights_hash,
                "kind": "flat",
                "size": len(gallery),
                "dim": embedder.dim,
            },
        )
        search.search_batch(SearchConfig(out=str(out), batch=True, k=5), table, embedder.tag)
        # an old candidates file that still names the verso: the workbench must ignore it
        topk = pd.read_parquet(candidates_path(str(out), embedder.tag))
        stale = topk.iloc[:1].assign(drawing_id=VERSO, distance=-0.5)
        pd.concat([stale, topk]).to_parquet(candidates_path(str(out), embedder.tag))
        similar.run(SimilarConfig(out=str(out), model_tag=embedder.tag, k=4))
    return out


def model_tags(out: Path) -> list[str]:
    from drawmatch.data.embeddings import list_model_tags

    return list_model_tags(out)

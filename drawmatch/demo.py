"""The demo job: the whole pipeline on the bundled real demo data, on a local Ray instance.

ingest -> augment (styled copies of the paired drawings) -> embed -> index -> evaluate, then the
top-5 artworks of a few drawings, printed and drawn on a contact sheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from drawmatch import augment, embed, evaluate, index, ingest, storage
from drawmatch import catalogue as cat
from drawmatch.artwork_index import ArtworkIndex
from drawmatch.embeddings import read_embeddings
from drawmatch.pairs import read_pairs
from drawmatch.report import Tile, contact_sheet
from drawmatch.settings import (
    AugmentConfig,
    DemoConfig,
    EmbedConfig,
    EvaluateConfig,
    IndexConfig,
    IngestConfig,
    ModelConfig,
    RayConfig,
    save_config,
)

CONTACT_SHEET = "contact_sheet.jpg"


def demo_data_dir() -> Path:
    """The demo data shipped inside the package (real drawn stamps and photos, GPL-2.0-or-later)."""
    return Path(str(resources.files("drawmatch") / "demo_data"))


def artwork_metadata(data: Path, out: str) -> str:
    """The demo's artworks.csv in the ingest metadata format: file, title (its subject), source."""
    source = pd.read_csv(data / "artworks.csv", dtype=str, keep_default_na=False)
    target = storage.join(out, "demo_artworks_metadata.csv")
    table = pd.DataFrame(
        {
            "file": source["file"],
            "title": source["subject"],
            "source": source["source_package"] + ": " + source["source_path"],
        }
    )
    storage.write_bytes(target, table.to_csv(index=False).encode())
    return target


def ingest_data(data: Path, out: str, ray: RayConfig) -> None:
    """Ingest a folder laid out like the demo data (drawings/, artworks/, artworks.csv)."""
    ingest.run(
        IngestConfig(
            out=str(out),
            drawings_root=str(data / "drawings"),
            artworks_root=str(data / "artworks"),
            artworks_metadata_csv=artwork_metadata(data, out),
            ray=ray,
        )
    )


@dataclass
class DemoResult:
    out: str
    model_tag: str
    metrics: dict[str, float]
    contact_sheet: str


def run(config: DemoConfig) -> DemoResult:
    data = Path(config.data) if config.data else demo_data_dir()
    out = storage.absolute(config.out)
    storage.makedirs(out)
    save_config(config, storage.join(out, "demo_config.yaml"))
    pairs_csv = str(data / "pairs.csv")
    print(f"== drawmatch demo: data {data}, output {out}")

    print("== 1/5 ingest")
    ingest_data(data, out, config.ray)
    print("== 2/5 augment (style copies of the paired drawings)")
    augment.run(
        AugmentConfig(
            out=str(out), styles=config.styles, select="paired", pairs_csv=pairs_csv, ray=config.ray
        )
    )
    print("== 3/5 embed")
    model = ModelConfig(
        backbone=config.backbone, pretrained=config.pretrained, image_size=config.image_size
    )
    embedded = embed.run(
        EmbedConfig(out=str(out), model=model, batch_size=config.batch_size, ray=config.ray)
    )
    tag = embedded.model_tag
    print("== 4/5 index")
    index.run(IndexConfig(out=str(out), model_tag=tag))
    print("== 5/5 evaluate")
    evaluated = evaluate.run_pairs(EvaluateConfig(out=str(out), model_tag=tag, pairs_csv=pairs_csv))

    sheet = show_examples(out, tag, read_pairs(pairs_csv), config.examples)
    print(f"== done: metrics in {evaluated.path}, contact sheet {sheet}")
    return DemoResult(str(out), tag, evaluated.metrics, str(sheet))


def show_examples(out: str, tag: str, pairs: pd.DataFrame, count: int, k: int = 5) -> str:
    """Print the top-k artworks of `count` drawings and draw them on a contact sheet: per drawing,
    a row with the drawing, its styled copies and its top-k (relevant ones framed green)."""
    catalogue = cat.read_catalogue(out)
    roots = cat.read_roots(out)
    paths = dict(zip(catalogue["id"], cat.resolve_paths(catalogue, roots)))
    queries = sorted(pairs["drawing_id"].unique())
    step = max(1, len(queries) // max(count, 1))
    chosen = queries[::step][:count]
    relevant = pairs.groupby("drawing_id")["artwork_id"].apply(set)
    artwork_index = ArtworkIndex(out, tag)
    _ids, emb = read_embeddings(out, tag, ids=chosen)
    top, dist = artwork_index.search(emb, k)
    styled = catalogue[catalogue["parent_id"].isin(chosen) & (catalogue["status"] == "ok")]
    rows = []
    for qi, query in enumerate(chosen):
        print(
            f"{query}: "
            + ", ".join(
                f"{a} ({d:.3f}{', relevant' if a in relevant[query] else ''})"
                for a, d in zip(top[qi], dist[qi])
            )
        )
        row = [Tile(paths[query], query)]
        copies = styled[styled["parent_id"] == query]
        row += [Tile(paths[i], f"style: {s}") for i, s in zip(copies["id"], copies["style"])]
        row += [
            Tile(paths[a], f"{r + 1}. distance {d:.3f}\n{a}", a in relevant[query])
            for r, (a, d) in enumerate(zip(top[qi], dist[qi]))
        ]
        rows.append(row)
    return contact_sheet(rows, storage.join(out, CONTACT_SHEET))

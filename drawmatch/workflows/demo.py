"""The demo job: the whole pipeline on the bundled real demo data, on a local Ray instance.

ingest -> augment (styled copies of the paired drawings) -> embed -> index -> evaluate, then the
top-5 artworks of a few drawings, printed and drawn on a contact sheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from drawmatch.augment.styles import STYLES
from drawmatch.core import storage
from drawmatch.core.config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Config,
    save_config,
    section,
    setting,
)
from drawmatch.data import catalogue as cat
from drawmatch.data.pairs import read_pairs
from drawmatch.jobs import augment, embed, evaluate, index, ingest
from drawmatch.jobs.augment import AugmentConfig
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.ingest import IngestConfig
from drawmatch.models.embedder import ModelConfig
from drawmatch.reporting.results import annotated, rankings
from drawmatch.reporting.sheets import Tile, contact_sheet
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class DemoConfig(Config):
    """The whole pipeline (ingest, augment, embed, index, evaluate) on the bundled demo data, or
    on `data` (a folder with drawings/, artworks/, artworks.csv, pairs.csv)."""

    out: str = setting("drawmatch-demo", help="output root")
    data: str | None = setting(None, help="data folder (null: the bundled demo data)")
    backbone: str = setting("efficientnet_lite0", help="backbone name (`drawmatch models`)")
    pretrained: bool = setting(True, help="the backbone's pretrained weights")
    image_size: int | None = setting(
        None,
        ge=MIN_IMAGE_SIZE,
        le=MAX_IMAGE_SIZE,
        help="input side in px (null: the backbone's own)",
    )
    batch_size: int = setting(4, ge=1, help="images per embedding batch")
    styles: tuple[str, ...] = setting(STYLES, choices=STYLES, help="styles of the augment step")
    examples: int = setting(4, ge=1, help="drawings on the contact sheet")
    ray: RayConfig = section(RayConfig)


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


OVERRIDES = "drawings_overrides.csv"  # the demo drawings' year, age and country (made up)


def ingest_data(data: Path, out: str, ray: RayConfig) -> None:
    """Ingest a folder laid out like the demo data (drawings/, artworks/, artworks.csv, and
    drawings_overrides.csv if there is one)."""
    overrides = data / OVERRIDES
    ingest.run(
        IngestConfig(
            out=str(out),
            drawings_root=str(data / "drawings"),
            artworks_root=str(data / "artworks"),
            artworks_metadata_csv=artwork_metadata(data, out),
            overrides_csv=str(overrides) if overrides.is_file() else None,
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
    a row with the drawing, its styled copies, its top-k (annotated ones framed green) and then
    any annotated artwork that missed the top-k, with its rank in the whole gallery."""
    catalogue = cat.read_catalogue(out)
    roots = cat.read_roots(out)
    paths = dict(zip(catalogue["id"], cat.resolve_paths(catalogue, roots)))
    searchable = set(cat.query_ids(catalogue))
    queries = sorted(set(pairs["drawing_id"]) & searchable)
    step = max(1, len(queries) // max(count, 1))
    chosen = queries[::step][:count]
    relevant = annotated(pairs)
    ranked = rankings(out, tag, catalogue, chosen, relevant, k)
    styled = catalogue[catalogue["parent_id"].isin(chosen) & cat.usable(catalogue)]
    rows = []
    for ranking in ranked:
        query = ranking.drawing_id
        print(
            f"{query}: "
            + ", ".join(
                f"{r}. {a} ({d:.3f}{', annotated' if a in ranking.annotated else ''})"
                for a, d, r in ranking.top
            )
        )
        row = [Tile(paths[query], f"drawing\n{query}", "query")]
        copies = styled[styled["parent_id"] == query]
        row += [Tile(paths[i], f"style copy: {s}") for i, s in zip(copies["id"], copies["style"])]
        row += [
            Tile(
                paths[a],
                f"rank {r} · distance {d:.3f}\n{a}",
                "annotated" if a in ranking.annotated else "other",
            )
            for a, d, r in ranking.top
        ]
        shown = {a for a, _d, _r in ranking.top}
        for a, (r, d) in sorted(ranking.annotated.items(), key=lambda item: item[1][0]):
            if a not in shown:
                print(f"  annotated {a}: rank {r} (distance {d:.3f})")
                row.append(
                    Tile(paths[a], f"annotated, rank {r} · distance {d:.3f}\n{a}", "annotated")
                )
        rows.append(row)
    legend = [
        f"drawmatch demo, model {tag}: one row per drawing (blue frame): the drawing, its style "
        f"copies, its {k} closest artworks, then annotated artworks ranked below {k}.",
        "Green frame: an artwork annotated for this drawing (pairs.csv). Rank: 1 = closest, "
        "among all searchable artworks. Distance: 1 - cosine similarity (0 = identical).",
    ]
    return contact_sheet(rows, storage.join(out, CONTACT_SHEET), legend)

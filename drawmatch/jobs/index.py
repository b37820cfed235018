"""The index job: a FAISS index over one model's artwork embeddings, saved with its id map and
provenance (see `drawmatch.retrieval.artwork_index`): `flat` is exact; `ivf` and `hnsw` are
approximate, for large galleries (kinds and parameter ranges: `drawmatch.retrieval.faiss_index`).
A rerun updates the saved index with the artworks added, changed or removed since, writing them as
a new segment so the cost follows them, or rebuilds it where it cannot
(`drawmatch.retrieval.artwork_index.update_index`, `drawmatch.retrieval.segments`)."""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core import storage
from drawmatch.core.config import save_config, setting
from drawmatch.core.locks import job_lock
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import embeddings_dir, pick_model_tag, stored_ids
from drawmatch.retrieval.artwork_index import IndexParams, index_dir, update_index


@dataclass(frozen=True)
class IndexConfig(IndexParams):
    """A FAISS index of the artworks' embeddings: `flat` (exact), `ivf` (`nlist` lists, `nprobe`
    searched) or `hnsw` (`hnsw_m` links per node, `ef_search` candidates)."""

    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(
        None, help="model whose embeddings are indexed (null: the only one)"
    )
    rebuild: bool = setting(
        False, help="build from all vectors (false: update the saved index with what changed)"
    )


@dataclass
class IndexResult:
    model_tag: str
    directory: str
    size: int
    kind: str


def run(config: IndexConfig) -> IndexResult:
    """Build and save the index of one model's gallery; one run per model's index folder at a
    time (`drawmatch.core.locks`)."""
    tag = pick_model_tag(config.out, config.model_tag)
    with job_lock(index_dir(config.out, tag), "index"):
        return _build(config, tag)


def _build(config: IndexConfig, tag: str) -> IndexResult:
    catalogue = cat.read_catalogue(config.out)
    stored = stored_ids(embeddings_dir(config.out, tag)).drop_duplicates("id", keep="first")
    wanted = set(cat.gallery_ids(catalogue))
    # gallery artworks with an embedding, in the order read_embeddings reads them
    current = {k: s for k, s in zip(stored["id"], stored["sha256"]) if k in wanted}
    if not current:
        raise ValueError(f"no artwork embeddings for model {tag}: run `drawmatch embed` first")
    missing = len(wanted) - len(current)
    params = {
        "kind": config.kind,
        "nlist": config.nlist,
        "nprobe": config.nprobe,
        "hnsw_m": config.hnsw_m,
        "ef_search": config.ef_search,
    }
    size, how = update_index(config.out, tag, current, params, config.rebuild, stored)
    directory = index_dir(config.out, tag)
    save_config(config, storage.join(directory, "index_config.yaml"))
    print(
        f"index {tag}: {config.kind} index of {size} artworks {how}, written to {directory}"
        + (f" ({missing} catalogued artworks have no embedding yet)" if missing else "")
    )
    return IndexResult(model_tag=tag, directory=str(directory), size=size, kind=config.kind)

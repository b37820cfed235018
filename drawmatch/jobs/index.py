"""The index job: a FAISS index over one model's artwork embeddings, saved with its id map and
provenance (see `drawmatch.retrieval.artwork_index`): `flat` is exact; `ivf` and `hnsw` are
approximate, for large galleries (kinds and parameter ranges: `drawmatch.retrieval.faiss_index`)."""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core import storage
from drawmatch.core.config import save_config, setting
from drawmatch.core.locks import job_lock
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import (
    embeddings_dir,
    pick_model_tag,
    read_embeddings,
    read_model_info,
    stored_ids,
)
from drawmatch.retrieval.artwork_index import IndexParams, build_faiss_index, index_dir, write_index


@dataclass(frozen=True)
class IndexConfig(IndexParams):
    """A FAISS index of the artworks' embeddings: `flat` (exact), `ivf` (`nlist` lists, `nprobe`
    searched) or `hnsw` (`hnsw_m` links per node, `ef_search` candidates)."""

    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(
        None, help="model whose embeddings are indexed (null: the only one)"
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
    info = read_model_info(config.out, tag)
    catalogue = cat.read_catalogue(config.out)
    ids, emb = read_embeddings(config.out, tag)
    stored = stored_ids(embeddings_dir(config.out, tag)).drop_duplicates("id", keep="first")
    sha_of = dict(zip(stored["id"], stored["sha256"]))
    wanted = set(cat.gallery_ids(catalogue))
    keep = [i for i, k in enumerate(ids) if k in wanted]
    if not keep:
        raise ValueError(f"no artwork embeddings for model {tag}: run `drawmatch embed` first")
    missing = len(wanted) - len(keep)
    ids = [ids[i] for i in keep]
    emb = emb[keep]
    index = build_faiss_index(
        emb, config.kind, config.nlist, config.nprobe, config.hnsw_m, config.ef_search
    )
    directory = index_dir(config.out, tag)
    meta = {
        "model_tag": tag,
        "weights_hash": info["weights_hash"],
        "kind": config.kind,
        "size": len(ids),
        "dim": int(emb.shape[1]),
    }
    write_index(directory, index, ids, meta, sha256=[sha_of[k] for k in ids])
    save_config(config, storage.join(directory, "index_config.yaml"))
    print(
        f"index {tag}: {config.kind} index of {len(ids)} artworks written to {directory}"
        + (f" ({missing} catalogued artworks have no embedding yet)" if missing else "")
    )
    return IndexResult(model_tag=tag, directory=str(directory), size=len(ids), kind=config.kind)

"""Workbench speed at collection scale: page latency, upload search and server memory.

A generated output root with 100,000 drawings and 10,000 artworks (synthetic IMAJ metadata; real
catalogue, embeddings store, FAISS index, candidates and neighbour tables, annotation database),
served by the real `drawmatch serve` (uvicorn, one process), measured from a client:

- grid pages (random filters: country, year, age group, annotation state, sort, page),
- drawing pages (live top-k from the artwork index, annotation state, similar drawings),
- artwork pages, review-queue pages, annotation posts,
- upload search: a 4000 x 3000 phone-photo JPEG embedded with EfficientNet-Lite0 (real
  ImageNet weights; the catalogue's vectors are random unit vectors of the same model tag),
- the server's resident memory after start and after the run, and its start time.

    python benchmarks/bench_serve.py [--drawings 100000] [--artworks 10000] [--requests 200]

Targets (issue 9): grid and drawing pages p95 <= 100 ms, upload search <= 1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data.annotations import AnnotationStore, db_path
from drawmatch.data.embeddings import embeddings_dir, embeddings_table, write_model_info, write_part
from drawmatch.data.neighbours import ARTWORKS_FILE, DRAWINGS_FILE, candidates_path, similar_dir
from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.retrieval.artwork_index import build_faiss_index, index_dir, write_index
from drawmatch.workflows.demo import demo_data_dir

COUNTRIES = ["BLG", "FRA", "JPN", "BRA", "IND", "KEN", "MEX", "POL", "USA", "VNM", "EGY", "CHN"]
AGES = ["3-5", "6-9", "10-13", "14-17", "18-25", "MS"]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def generate(out: Path, n_drawings: int, n_artworks: int, seed: int = 0) -> str:
    """Write the output root; returns the model tag."""
    rng = np.random.default_rng(seed)
    demo = demo_data_dir()
    images = sorted((demo / "drawings").glob("*.jpg")) + sorted((demo / "artworks").glob("*.jpg"))
    roots = {"drawings": str(demo / "drawings"), "artworks": str(demo / "artworks")}
    drawing_files = [p.name for p in sorted((demo / "drawings").glob("*.jpg"))]
    artwork_files = [p.name for p in sorted((demo / "artworks").glob("*.jpg"))]
    del images
    years = rng.integers(1994, 2021, n_drawings)
    ages = rng.choice(AGES, n_drawings)
    countries = rng.choice(COUNTRIES, n_drawings)
    ids = [f"{y}_{a}_{i:06d}_{c}_R_C" for i, (y, a, c) in enumerate(zip(years, ages, countries))]
    drawings = pd.DataFrame(
        {
            "id": ids,
            "collection": "drawing",
            "root": "drawings",
            "path": [drawing_files[i % len(drawing_files)] for i in range(n_drawings)],
            "year": years,
            "age_group_raw": ages,
            "age_group": ages,
            "country_code": countries,
            "country_iso3": countries,
            "side": "R",
            "quality": "C",
            "verso": False,
        }
    )
    versos = drawings.iloc[: n_drawings // 50].copy()
    versos["id"] = versos["id"].str.replace("_R_C", "_V_C")
    versos["side"] = "V"
    versos["verso"] = True
    artworks = pd.DataFrame(
        {
            "id": [f"artwork_{i:05d}" for i in range(n_artworks)],
            "collection": "artwork",
            "root": "artworks",
            "path": [artwork_files[i % len(artwork_files)] for i in range(n_artworks)],
            "artist": [f"Artist {i % 700}" for i in range(n_artworks)],
            "title": [f"Famous work {i}" for i in range(n_artworks)],
            "source": "synthetic",
            "verso": False,
        }
    )
    table = pd.concat([drawings, versos, artworks], ignore_index=True)
    table["sha256"] = [f"{i:064x}" for i in range(len(table))]
    table["status"] = "ok"
    table["error"] = None
    table["parent_id"] = None
    table["style"] = "original"
    table["duplicate_of"] = None
    table["width"] = 2480
    table["height"] = 3508
    cat.write_catalogue(table, out)
    cat.write_roots(out, roots)

    model = ModelConfig(backbone="efficientnet_lite0", pretrained=True, image_size=280)
    probe = Embedder(asdict(model))
    tag, whash, dim = probe.tag, probe.weights_hash, probe.dim
    del probe
    directory = embeddings_dir(str(out), tag)
    embedded = table[~table["verso"]]
    emb_ids = embedded["id"].tolist()
    for start in range(0, len(emb_ids), 20_000):
        part = emb_ids[start : start + 20_000]
        write_part(
            directory,
            embeddings_table(
                part,
                embedded["sha256"].iloc[start : start + 20_000].tolist(),
                unit_vectors(rng, len(part), dim),
                tag,
                whash,
            ),
        )
    write_model_info(
        directory, {"model_tag": tag, "weights_hash": whash, "dim": dim, "model": asdict(model)}
    )
    gallery = artworks["id"].tolist()
    art_emb = unit_vectors(np.random.default_rng(seed + 1), n_artworks, dim)
    write_index(
        index_dir(str(out), tag),
        build_faiss_index(art_emb),
        gallery,
        {"model_tag": tag, "weights_hash": whash, "kind": "flat", "size": n_artworks, "dim": dim},
    )
    k = 20
    cand = pd.DataFrame(
        {
            "drawing_id": np.repeat(ids, k),
            "rank": np.tile(np.arange(k), n_drawings),
            "artwork_id": np.asarray(gallery)[rng.integers(0, n_artworks, n_drawings * k)],
            "distance": np.sort(rng.uniform(0.2, 0.9, (n_drawings, k)), axis=1).ravel(),
        }
    )
    cand["artist"] = "Artist"
    cand["title"] = "Famous work"
    cand["model"] = tag
    storage.write_parquet(
        pa.Table.from_pandas(cand, preserve_index=False), candidates_path(str(out), tag)
    )
    sim = pd.DataFrame(
        {
            "drawing_id": np.repeat(ids, 12),
            "rank": np.tile(np.arange(12), n_drawings),
            "similar_id": np.asarray(ids)[rng.integers(0, n_drawings, n_drawings * 12)],
            "distance": np.sort(rng.uniform(0.1, 0.5, (n_drawings, 12)), axis=1).ravel(),
        }
    )
    storage.write_parquet(
        pa.Table.from_pandas(sim, preserve_index=False),
        storage.join(similar_dir(str(out), tag), DRAWINGS_FILE),
    )
    near = pd.DataFrame(
        {
            "artwork_id": np.repeat(gallery, 12),
            "rank": np.tile(np.arange(12), n_artworks),
            "drawing_id": np.asarray(ids)[rng.integers(0, n_drawings, n_artworks * 12)],
            "distance": np.sort(rng.uniform(0.1, 0.5, (n_artworks, 12)), axis=1).ravel(),
        }
    )
    storage.write_parquet(
        pa.Table.from_pandas(near, preserve_index=False),
        storage.join(similar_dir(str(out), tag), ARTWORKS_FILE),
    )
    store = AnnotationStore(db_path(out))
    for i in range(2000):  # earlier annotation work: 2,000 decisions
        store.add(
            ids[(i * 37) % n_drawings],
            gallery[i % n_artworks],
            ("match", "non-match", "skip")[i % 3],
            f"expert {i % 5}",
            tag,
            1 + i % 20,
            0.3,
        )
    return tag


def phone_photo() -> bytes:
    """A 4000 x 3000 JPEG: a demo drawing on a paper-coloured background, like a phone photo."""
    from PIL import Image

    drawing = Image.open(sorted((demo_data_dir() / "drawings").glob("*.jpg"))[0]).convert("RGB")
    canvas = Image.new("RGB", (4000, 3000), (238, 232, 220))
    canvas.paste(drawing.resize((2400, 2400)), (800, 300))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def percentiles(values: list[float]) -> dict[str, float | int]:
    ms = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drawings", type=int, default=100_000)
    parser.add_argument("--artworks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--work", default=None, help="folder for the generated output root")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args(argv)

    import httpx
    import psutil

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-serve-"))
    out = work / "out"
    t = time.perf_counter()
    if not (out / "catalogue.parquet").exists():
        tag = generate(out, args.drawings, args.artworks)
    else:
        tag = json.loads(next((out / "embeddings").glob("*/model.json")).read_text())["model_tag"]
    print(f"output root {out} ready in {time.perf_counter() - t:.0f} s (model {tag})")

    code = (
        "import sys; from drawmatch.cli import main; "
        f"sys.exit(main(['serve', 'out={out}', 'port={args.port}', 'log_level=warning']))"
    )
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{args.port}"
    figures: dict[str, object] = {
        "drawings": args.drawings,
        "artworks": args.artworks,
        "load_average_before": round(os.getloadavg()[0], 1),
    }
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited")
            try:
                health = httpx.get(url + "/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        figures["start_s"] = round(time.perf_counter() - started, 1)
        figures["rss_after_start_mb"] = round(rss_mb(proc.pid), 0)
        print(f"server up in {figures['start_s']} s: {health}")
        rng = np.random.default_rng(1)
        with httpx.Client(base_url=url, timeout=60) as http:
            page = http.get("/login")
            nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
            http.post("/login", data={"nonce": nonce, "name": "Benchmark"})
            grid = http.get("/drawings")
            token = re.search(r'name="csrf_token" value="([^"]+)"', grid.text).group(1)
            countries, years = COUNTRIES, list(range(1994, 2021))

            def timed(method: str, path: str, **kwargs: object) -> float:
                t0 = time.perf_counter()
                response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
                elapsed = time.perf_counter() - t0
                assert response.status_code in (200, 303), (path, response.status_code)
                return elapsed

            for _ in range(10):  # warm up
                timed("GET", "/drawings")
            server = psutil.Process(proc.pid)

            def phase(name: str, requests: list[tuple[str, str, dict]]) -> None:
                """Time each request; the server's CPU time per request besides (it does not
                depend on what else runs on the machine)."""
                cpu = sum(server.cpu_times()[:2])
                times = [timed(method, path, **kwargs) for method, path, kwargs in requests]
                figures[name] = percentiles(times)
                figures[name]["server_cpu_ms"] = round(
                    (sum(server.cpu_times()[:2]) - cpu) / len(requests) * 1000, 1
                )

            grids = []
            for i in range(args.requests):
                params = {"sort": ["id", "year", "country", "age"][i % 4], "page": 1 + i % 50}
                if i % 2:
                    params["country"] = str(rng.choice(countries))
                if i % 3 == 0:
                    params["year"] = str(rng.choice(years))
                if i % 5 == 0:
                    params["age_group"] = str(rng.choice(AGES))
                if i % 7 == 0:
                    params["state"] = "unannotated"
                grids.append(("GET", "/drawings", {"params": params}))
            phase("grid_page", grids)
            pool = []
            for _ in range(20):
                page = http.get("/drawings", params={"page": 1 + int(rng.integers(0, 1500))})
                pool += re.findall(r'href="/drawings/([^"?]+)"', page.text)
            drawings = [str(rng.choice(pool)) for _ in range(args.requests)]
            artworks = [
                f"artwork_{int(rng.integers(0, args.artworks)):05d}" for _ in range(args.requests)
            ]
            phase(
                "drawing_page", [("GET", f"/drawings/{d}", {"params": {"k": 12}}) for d in drawings]
            )
            half = args.requests // 2
            phase("artwork_page", [("GET", f"/artworks/{a}", {}) for a in artworks[:half]])
            phase("review_page", [("GET", "/review", {})] * half)
            phase(
                "annotate_post",
                [
                    (
                        "POST",
                        "/annotate",
                        {
                            "data": {
                                "drawing_id": d,
                                "artwork_id": a,
                                "decision": "match",
                                "rank": "3",
                                "distance": "0.25",
                            },
                            "headers": {"X-CSRF-Token": token, "HX-Request": "true"},
                        },
                    )
                    for d, a in zip(drawings[:half], artworks[:half])
                ],
            )

            photo = phone_photo()
            figures["upload_bytes"] = len(photo)
            wait = time.perf_counter()
            while http.get("/healthz").json()["models"][tag] != "ready":
                time.sleep(0.5)
            figures["model_ready_wait_s"] = round(time.perf_counter() - wait, 1)
            phase(
                "upload_search",
                [
                    (
                        "POST",
                        "/upload",
                        {
                            "files": {"image": ("photo.jpg", photo, "image/jpeg")},
                            "data": {"csrf_token": token},
                        },
                    )
                ]
                * args.uploads,
            )
        figures["rss_after_run_mb"] = round(rss_mb(proc.pid), 0)
        figures["load_average_after"] = round(os.getloadavg()[0], 1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())

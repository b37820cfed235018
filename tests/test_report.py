"""The report job end to end: on the demo's output and on a tiny fold run with a verso.

Every number the report shows is checked against the JSON the jobs wrote, every image it
references must exist, and a verso's id and image never appear.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from drawmatch.core.config import ConfigError, load_config
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import read_embeddings
from drawmatch.jobs import embed, evaluate, train
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.report import INDEX_FILE, JSON_FILE, TEXT_FILE, ReportConfig
from tests.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    needs_chromium,
    tiny_train_config,
    tiny_training_set,
)

ROOT = Path(__file__).resolve().parents[1]
VERSO = "2004_10-13_0099_FRA_V_C"


def run_report(*argv: str) -> int:
    """The report job through its Ray entrypoint, `jobs/report.py`."""
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import report as report_entrypoint
    finally:
        sys.path.pop(0)
    return int(report_entrypoint.main(list(argv)))


class Page(HTMLParser):
    """Tables (by `data-table`: rows of (text, data-value)) and image sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell, self._value = [], a.get("data-value")

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell), self._value))
            self._cell = None
        elif tag == "table":
            self._table = None


def read_page(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text())
    page.tables = {k: [row for row in rows if row] for k, rows in page.tables.items()}  # no <th>
    return page


def check_evaluations_match(out: Path, page: Page, data: dict) -> int:
    """Every evaluate JSON under `out` is a row of the page's table with exactly its numbers."""
    rows = [r for r in page.tables["evaluations"] if r]
    files = sorted((out / "evaluation").glob("*/metrics*.json"))
    assert files and len(rows) == len(files) == len(data["comparison"]["evaluations"])
    header = None
    for path in files:
        written = json.loads(path.read_text())
        label = Path(written["pairs"]).name + (f" ({written['set']})" if written["set"] else "")
        (row,) = [r for r in rows if r[0][0] == written["model_tag"] and r[1][0] == label]
        header = header or list(written["metrics"])
        (entry,) = [e for e in data["comparison"]["evaluations"] if Path(e["file"]) == path]
        assert entry["metrics"] == written["metrics"]
        values = [float(v) for _t, v in row[3:] if v is not None]
        shown = [k for k in sorted_keys(written["metrics"]) if shown_at(k, written["gallery_size"])]
        assert values == [float(written["metrics"][k]) for k in shown]
        for key in ("MAP", "MP", "MMP"):
            assert f"{written['metrics'][key]:.2f}" in [t for t, _v in row]
    return len(files)


def shown_at(key: str, gallery_size: int) -> bool:
    """Whether the page shows a metric: R@k only for k below the gallery size."""
    return not key.startswith("R@") or int(key[2:]) < gallery_size


def sorted_keys(metrics: dict) -> list[str]:
    from drawmatch.reporting.results import metric_keys

    return metric_keys(metrics)


def check_images_exist(report_dir: Path, page: Page) -> None:
    assert page.images
    for src in page.images:
        assert not src.startswith(("http:", "https:", "/", "file:")), src
        assert (report_dir / src).is_file(), src
    # every thumbnail links to its image at full size, written beside the page
    full = [link for link in page.links if link.startswith("images/full/")]
    assert len(full) == sum(1 for src in page.images if not src.endswith(".png"))
    for link in full:
        with Image.open(report_dir / link) as img:
            assert img.format == "JPEG" and max(img.size) <= 2048
    for text in ("http://", "https://", "<script"):
        assert text not in (report_dir / INDEX_FILE).read_text()


# ----------------------------------------------------------------------------------------------
# the demo


@pytest.fixture(scope="module")
def demo_report(demo_out, tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("demo-report") / "report"
    assert run_report(f"out={demo_out}", f"output={report_dir}", "examples=4") == 0
    return demo_out, report_dir


def test_demo_report_shows_what_evaluate_wrote(demo_report):
    out, report_dir = demo_report
    page = read_page(report_dir / INDEX_FILE)
    data = json.loads((report_dir / JSON_FILE).read_text())
    assert check_evaluations_match(out, page, data) == 1
    check_images_exist(report_dir, page)
    # the positions behind the box plot give evaluate's figures again
    assert all(data["comparison"]["positions_match_evaluate"].values())
    assert (report_dir / TEXT_FILE).read_text().count("MMP") >= 1
    assert "0-based" in (report_dir / INDEX_FILE).read_text()


def test_demo_report_sheets_rank_every_annotated_artwork(demo_report):
    out, report_dir = demo_report
    data = json.loads((report_dir / JSON_FILE).read_text())
    sheets = data["qualitative"]["sheets"]
    assert len(sheets) == 4
    catalogue = cat.read_catalogue(out)
    gallery = cat.gallery_ids(catalogue)
    tag = data["models"][0]
    _ids, emb = read_embeddings(out, tag, ids=gallery + [s["drawing_id"] for s in sheets])
    beyond = 0
    for i, sheet in enumerate(sheets):
        shown = sheet["models"][tag]
        assert [t["rank"] for t in shown["top"]] == list(range(1, 11))
        distances = [t["distance"] for t in shown["top"]]
        assert distances == sorted(distances)
        order = np.argsort(-(emb[: len(gallery)] @ emb[len(gallery) + i]), kind="stable")
        for artwork, where in shown["annotated_ranks"].items():
            assert where["rank"] == int(np.flatnonzero(np.array(gallery)[order] == artwork)[0]) + 1
            beyond += where["rank"] > 10
        assert set(shown["annotated_ranks"]) == set(sheet["annotated"])
    assert beyond > 0  # the demo has annotated artworks far down: they are named with their rank
    html = (report_dir / INDEX_FILE).read_text()
    assert "below the top 10" in html
    review = data["qualitative"]["review"]["candidates"]
    assert review and all(r["rank"] >= 1 for r in review)
    pairs = pd.read_csv(ROOT / "drawmatch" / "demo_data" / "pairs.csv")
    known = set(zip(pairs["drawing_id"], pairs["artwork_id"]))
    assert not [r for r in review if (r["drawing_id"], r["artwork_id"]) in known]


@needs_chromium
def test_demo_report_renders_in_headless_chromium(demo_report, tmp_path):
    _out, report_dir = demo_report
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            *CHROMIUM_ARGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1400,2400",
            (report_dir / INDEX_FILE).as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1400)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500  # plots and text, not a blank page


# ----------------------------------------------------------------------------------------------
# a tiny fold run, with IMAJ metadata and a verso


def _train(out: Path, fold_csv: Path, name: str) -> train.TrainResult:
    return train.run(
        tiny_train_config(
            out,
            fold_csv,
            f"run_name={name}",
            "epochs=2",
            "num_workers=1",
            "cpus_per_worker=1",
            "use_styles=false",
        )
    )


def _embed(out: Path, image_size: int) -> str:
    overrides = [
        f"out={out}",
        "model.backbone=tiny",
        "model.pretrained=false",
        f"model.image_size={image_size}",
    ]
    return embed.run(load_config(EmbedConfig, None, overrides)).model_tag


def _add_metadata_and_a_verso(root: Path, out: Path) -> None:
    """IMAJ metadata on the drawings, one flagged duplicate, and a verso: a pure red image whose
    name parses, with an age group and a duplicate flag of its own."""
    df = cat.read_catalogue(out)
    drawing = df["collection"] == "drawing"
    n = int(drawing.sum())
    df.loc[drawing, "year"] = [2003 + i % 2 for i in range(n)]
    df.loc[drawing, "age_group"] = [["6-9", "10-13", None][i % 3] for i in range(n)]
    df.loc[drawing, "country_iso3"] = [["FRA", "LVA", "FRA", "POL"][i % 4] for i in range(n)]
    df.loc[df["id"] == "draw11", "duplicate_of"] = "draw10"
    verso_path = root / "d" / f"{VERSO}.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(verso_path)
    verso = {
        "id": VERSO,
        "collection": "drawing",
        "root": "drawings",
        "path": verso_path.name,
        "sha256": hashlib.sha256(verso_path.read_bytes()).hexdigest(),
        "status": "ok",
        "style": "original",
        "verso": True,
        "duplicate_of": "draw00",
        "year": 2004,
        "age_group": "10-13",
        "country_iso3": "FRA",
    }
    df = pd.concat([df, pd.DataFrame([verso])], ignore_index=True)
    df["year"] = df["year"].astype("Int64")
    cat.write_catalogue(df, out)
    summary = {"rows": len(df), "ok": len(df), "errors": 0, "versos": 1, "unparsed_names": 0}
    (out / "ingest_summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def fold_run(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("report-folds")
    out, _fold = tiny_training_set(root, n_folds=2)
    _add_metadata_and_a_verso(root, out)
    pairs_csv = root / "pairs.csv"
    folds = sorted((out / "folds").glob("fold_*.csv"))
    pd.read_csv(folds[0])[["drawing_id", "artwork_id"]].to_csv(pairs_csv, index=False)
    results = [_train(out, f, f"tiny-{f.stem}") for f in folds]
    evaluate.run(EvaluateConfig(out=str(out), folds=True))
    first_tag, second_tag = _embed(out, 32), _embed(out, 40)  # two models to compare
    for tag in (first_tag, second_tag):
        evaluate.run(EvaluateConfig(out=str(out), model_tag=tag, pairs_csv=str(pairs_csv)))
    evaluate.run(
        EvaluateConfig(out=str(out), model_tag=first_tag, split_csv=str(folds[0]), split_set="test")
    )
    report_dir = out / "report"
    assert run_report(f"out={out}", f"drawings=[{VERSO}, draw03, draw07]", "examples=2") == 0
    return out, report_dir, [r.run_dir for r in results]


def test_fold_report_numbers_equal_what_evaluate_and_train_wrote(fold_run):
    out, report_dir, run_dirs = fold_run
    page = read_page(report_dir / INDEX_FILE)
    data = json.loads((report_dir / JSON_FILE).read_text())
    assert check_evaluations_match(out, page, data) == 3
    check_images_exist(report_dir, page)

    folds = json.loads((out / "evaluation" / "folds.json").read_text())
    assert data["comparison"]["folds"] == folds
    names = list(folds["tables"])
    for row in page.tables["folds"]:
        metric = row[0][0]
        cells = [json.loads(v.replace("'", '"')) for _t, v in row[1:]]  # data-value: [mean, std]
        assert cells == [folds["tables"][n][metric] for n in names]

    (group,) = data["comparison"]["run_groups"]
    assert group["name"] == "tiny-fold_*" and len(group["runs"]) == 2
    expected = evaluate.fold_tables(sorted(run_dirs))
    assert group["tables"] == {n: {k: list(v) for k, v in t.items()} for n, t in expected.items()}
    for run_dir in run_dirs:
        written = json.loads((Path(run_dir) / "metrics.json").read_text())
        (run,) = [r for r in data["comparison"]["runs"] if r["name"] == Path(run_dir).name]
        assert run["history"] == written["history"]
        rows = page.tables[f"history-{Path(run_dir).name}"]
        assert [float(r[1][1]) for r in rows] == [h["train_loss"] for h in written["history"]]
    assert (report_dir / "images" / "training-curves.png").is_file()
    assert (report_dir / "images" / "fold-mp.png").is_file()


def test_fold_report_compares_the_models_with_paired_bootstrap_intervals(fold_run):
    out, report_dir, _runs = fold_run
    page = read_page(report_dir / INDEX_FILE)
    data = json.loads((report_dir / JSON_FILE).read_text())
    whole = {e["model_tag"]: e for e in data["comparison"]["evaluations"] if e["set"] is None}
    first, second = sorted(whole)  # the 32 px and the 40 px model, both on pairs.csv
    (diff,) = data["comparison"]["differences"]  # the test set was evaluated under one model
    assert (diff["reference"], diff["model"], diff["queries"]) == (first, second, 12)
    # R@k only below the gallery of 12 artworks, in the comparison and in the metrics table
    assert set(diff["metrics"]) == {"MAP", "MP", "MMP", "R@1", "R@5", "R@10"}
    assert {len(row) for row in page.tables["evaluations"]} == {3 + 8}  # + n_queries, n_pairs
    rows = {r[0][0]: r for r in page.tables[next(k for k in page.tables if "-vs-" in k)]}
    for metric, found in diff["metrics"].items():
        # the point estimates are evaluate's own figures; the page shows the JSON's numbers
        assert found["reference"] == pytest.approx(whole[first]["metrics"][metric])
        assert found["model"] == pytest.approx(whole[second]["metrics"][metric])
        assert found["low"] <= found["difference"] <= found["high"]
        assert float(rows[metric][3][1]) == found["difference"]
        assert json.loads(rows[metric][4][1]) == [found["low"], found["high"]]
        assert rows[metric][5][0].startswith("no") == (found["low"] <= 0 <= found["high"])


def test_fold_report_collection_counts_drawings_not_versos(fold_run):
    _out, report_dir, _runs = fold_run
    data = json.loads((report_dir / JSON_FILE).read_text())
    collection = data["collection"]
    assert collection["drawings"] == 12
    assert collection["by_year"] == {"2003": 6, "2004": 6}
    assert collection["by_age_group"] == {"6-9": 4, "10-13": 4, "unknown": 4}
    assert collection["by_country_iso3"] == {"FRA": 6, "LVA": 3, "POL": 3}
    assert collection["year_age"]["total"]["total"] == 12
    assert collection["year_age"]["2004"]["10-13"] == 2
    assert sum(len(v) for v in collection["samples"].values()) == 12
    assert collection["duplicates"] == [
        {"id": "draw11", "duplicate_of": "draw10", "collection": "drawing"}
    ]
    assert collection["ingest"]["versos (catalogued, never shown)"] == 1
    page = read_page(report_dir / INDEX_FILE)
    by_country = {r[0][0]: int(r[2][1]) for r in page.tables["drawings-by-country_iso3"] if r}
    assert by_country == {"France": 6, "Latvia": 3, "Poland": 3}


def test_fold_report_never_shows_a_verso(fold_run):
    out, report_dir, _runs = fold_run
    data = json.loads((report_dir / JSON_FILE).read_text())
    assert data["qualitative"]["drawings"] == ["draw03", "draw07"]
    assert data["qualitative"]["not_shown"] == 1
    for name in (INDEX_FILE, JSON_FILE, TEXT_FILE):
        text = (report_dir / name).read_text()
        assert VERSO not in text, name
    thumbs = sorted((report_dir / "images").glob("*.jpg"))
    assert thumbs and not [p for p in thumbs if VERSO in p.name]
    for path in thumbs:  # the verso is pure red; no thumbnail is
        pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
        red = (pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
        assert red.mean() < 0.5, path
    assert len(thumbs) == len(data["images"])
    # every thumbnail is one of a catalogued, showable image
    shown = set(data["qualitative"]["drawings"])
    assert shown <= set(cat.query_ids(cat.read_catalogue(out)))


def test_results_notebook_runs_on_a_fold_run(fold_run, monkeypatch):
    from tests.test_notebooks import execute_notebook, outputs_of

    out, _report_dir, _runs = fold_run
    executed = execute_notebook(ROOT / "notebooks" / "results.ipynb", out, monkeypatch)
    text = json.dumps(outputs_of(executed))
    assert "tiny-fold_*" in text and "image/png" in text


def test_report_config_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError):
        load_config(ReportConfig, None, ["top_k=0"])
    with pytest.raises(ConfigError):
        load_config(ReportConfig, None, ["examples=-1"])
    with pytest.raises(ConfigError):
        load_config(ReportConfig, None, ["colour=blue"])
    assert run_report(f"out={tmp_path / 'nothing'}") == 1  # no catalogue: a clear error
    assert not (tmp_path / "nothing").exists()


def test_report_html_escapes_every_text_from_the_data():
    """Ids, titles and captions come from the data: the templates escape them everywhere."""
    from markupsafe import Markup

    from drawmatch.reporting.html_report import TEMPLATES, Section, Table, Tile, render_page

    evil = "<script>x</script>\" onload='y' &amp;"
    blocks = TEMPLATES.from_string(
        '{% from "_macros.html" import table, tile %}{{ table(t) }}{{ tile(i) }}'
    )
    table = Table("k", evil, [evil], [[evil], [("1.00", 1.0)]], note=evil)
    body = Markup(blocks.render(t=table, i=Tile("images/a.jpg", evil, [evil], "query")))
    files = {"json": JSON_FILE, "text": TEXT_FILE}
    page = render_page(evil, evil, [Section("s", evil, body)], files)
    assert "<script" not in page and "onload='" not in page
    parsed = Page()
    parsed.feed(page)
    assert parsed.tables["k"] == [[], [(evil, None)], [("1.00", "1.0")]]
    assert parsed.images == ["images/a.jpg"]

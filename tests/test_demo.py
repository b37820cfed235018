"""End to end: the demo job through its Ray entrypoint, on the bundled real data.

The expected figures come from an independent script (docs/design.md cross-check: pretrained
EfficientNet-Lite0, mean over the last feature map, PIL bilinear 280x280, ImageNet mean/std, all
30 drawings against all 337 artworks): MAP 24.6, R@20 48.9, MP 63.8, MMP 42.1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
from PIL import Image

from drawmatch.data import catalogue as cat
from drawmatch.workflows.demo import CONTACT_SHEET, demo_data_dir

ROOT = Path(__file__).resolve().parents[1]
CROSS_CHECK = {"MAP": 24.6, "R@20": 48.9, "MP": 63.8, "MMP": 42.1}


def test_demo_reproduces_the_cross_check_figures(demo_out):
    metrics_files = list((demo_out / "evaluation").glob("*/metrics-pairs.json"))
    assert [p.parent.name for p in metrics_files] == ["efficientnet_lite0-avg-280-imagenet"]
    report = json.loads(metrics_files[0].read_text())
    metrics = report["metrics"]
    assert metrics["n_queries"] == 30 and metrics["n_pairs"] == 50
    assert report["gallery_size"] == 337
    for key, expected in CROSS_CHECK.items():
        assert abs(metrics[key] - expected) <= 0.5, (key, metrics[key], expected)


def test_demo_catalogue_styles_and_contact_sheet(demo_out):
    catalogue = cat.read_catalogue(demo_out)
    originals = catalogue[catalogue["parent_id"].isna()]
    assert (originals["collection"] == "drawing").sum() == 30
    assert (originals["collection"] == "artwork").sum() == 337
    assert (originals["status"] == "ok").all()
    styled = catalogue[catalogue["parent_id"].notna()]
    pairs = pd.read_csv(demo_data_dir() / "pairs.csv")
    assert len(styled) == pairs["drawing_id"].nunique() * 5
    assert set(styled["style"]) == {"oil", "watercolor", "texture", "gray", "pencil"}
    sheet = Image.open(demo_out / CONTACT_SHEET)
    # 3 example rows of 1 drawing + 5 styles + 5 artworks.
    assert sheet.width > 10 * 160 and sheet.height > 3 * 160


def test_console_script_works_from_any_directory(tmp_path):
    done = subprocess.run(["drawmatch", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0
    for job in ("ingest", "augment", "embed", "index", "search", "evaluate", "demo"):
        assert job in done.stdout

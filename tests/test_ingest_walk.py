"""Ingest's folder walk: files skipped for their extension are counted, empty roots warned about."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from drawmatch.jobs import ingest
from drawmatch.jobs.ingest import IngestConfig
from tests.conftest import make_image


def test_walk_counts_skipped_files_by_extension(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_image(root / "a.jpg")
    make_image(root / "sub" / "b.PNG", fmt="PNG")
    (root / "notes.txt").write_text("x")
    (root / "sub" / "scan.pdf").write_bytes(b"%PDF")
    (root / "sub" / "other.TXT").write_text("y")
    (root / "README").write_text("z")
    (root / ".jpg").write_bytes(b"")
    skipped: Counter[str] = Counter()
    unreadable: list[dict[str, str]] = []
    exts = ingest._normalise_extensions((".jpg", "png"))
    entries = ingest._walk(str(root), "drawing", "drawings", exts, set(), unreadable, skipped)
    assert sorted(e.rel_path for e in entries) == ["a.jpg", "sub/b.PNG"]
    assert skipped == {".txt": 2, ".pdf": 1, "(none)": 2}  # `.jpg` alone is a hidden file


def test_walk_uri_counts_skipped_files(tmp_path: Path) -> None:
    root = tmp_path / "a"
    make_image(root / "x.jpg")
    (root / "x.json").write_text("{}")
    skipped: Counter[str] = Counter()
    exts = ingest._normalise_extensions((".jpg",))
    entries = ingest._walk_uri(f"file://{root}", "artwork", "artworks", exts, set(), skipped)
    assert [e.file_name for e in entries] == ["x.jpg"]
    assert skipped == {".json": 1}


def test_empty_roots_warn_and_skipped_files_are_in_the_summary(tmp_path: Path, capsys) -> None:
    """Roots without a single image: a warning per root, counts in the summary (no Ray needed:
    there is nothing to probe)."""
    drawings, artworks = tmp_path / "drawings", tmp_path / "artworks"
    drawings.mkdir()
    artworks.mkdir()
    (artworks / "list.csv").write_text("a,b\n")
    (artworks / "thumbs.db").write_bytes(b"\0")
    out = tmp_path / "out"
    result = ingest.run(
        IngestConfig(out=str(out), drawings_root=str(drawings), artworks_root=str(artworks))
    )
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "drawings_root" in warnings[0] and str(drawings) in warnings[0]
    assert "artworks_root" in warnings[1]
    assert "2 files skipped for their extension" in printed
    summary = json.loads((out / ingest.SUMMARY_FILE).read_text())
    assert summary["skipped_by_extension"] == {".csv": 1, ".db": 1}
    assert summary["skipped_files"] == 2
    assert summary["empty_roots"] == ["drawings_root", "artworks_root"]
    assert result.rows == 0 and result.empty_roots == ["drawings_root", "artworks_root"]
    assert result.skipped_by_extension == {".csv": 1, ".db": 1}

"""Ingest's folder walk: files skipped for their extension are counted, empty roots warned about."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from drawmatch.data import catalogue
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


def _hostile_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root with a plain image, symlinks in and out of it, a directory named like an image, a
    FIFO and a broken link; and a folder outside it."""
    root, outside = tmp_path / "d", tmp_path / "elsewhere"
    make_image(root / "a.jpg", seed=1)
    make_image(outside / "secret.jpg", seed=2)
    make_image(outside / "more" / "b.jpg", seed=3)
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")
    (root / "inner.jpg").symlink_to(root / "a.jpg")
    (root / "gone.jpg").symlink_to(root / "missing.jpg")
    (root / "linked_dir").symlink_to(outside / "more", target_is_directory=True)
    (root / "linked.jpg").symlink_to(outside / "more", target_is_directory=True)
    make_image(root / "x.jpg" / "y.jpg", seed=4)
    os.mkfifo(root / "pipe.jpg")
    return root, outside


def test_walk_accounts_for_symlinks_directories_and_special_files(tmp_path: Path) -> None:
    root, _ = _hostile_tree(tmp_path)
    unreadable: list[dict[str, str]] = []
    exts = ingest._normalise_extensions((".jpg",))
    entries = ingest._walk(str(root), "drawing", "drawings", exts, set(), unreadable, Counter())
    errors = {e.rel_path: e.error for e in entries}
    assert errors == {
        "a.jpg": None,
        "inner.jpg": None,  # a symlink inside the root to a file inside it is fine
        "leak.jpg": "symlink pointing outside the root",
        "linked.jpg": "symlink pointing outside the root",
        "gone.jpg": "unreadable file: No such file or directory",
        "x.jpg": "a directory, not a file",
        "x.jpg/y.jpg": None,  # what the directory holds is still walked
        "pipe.jpg": "not a regular file",
    }
    assert unreadable == [
        {"root": "drawings", "path": "linked_dir", "reason": "symlink to a directory, not followed"}
    ]


def test_ingest_refuses_symlinks_out_of_the_root_and_counts_them(ray_local, tmp_path: Path) -> None:
    root, _ = _hostile_tree(tmp_path)
    out = tmp_path / "out"
    result = ingest.run(IngestConfig(out=str(out), drawings_root=str(root)))
    df = pd.read_parquet(result.catalogue_path).set_index("path")
    assert result.rows == 8 and result.ok == 3 and result.errors == 5
    assert df.loc["leak.jpg", "status"] == "error" and pd.isna(df.loc["leak.jpg", "sha256"])
    assert df.loc["x.jpg", "error"] == "a directory, not a file"
    assert set(df.index[catalogue.usable(df.reset_index())]) == {
        "a.jpg",
        "inner.jpg",
        "x.jpg/y.jpg",
    }
    summary = json.loads((out / ingest.SUMMARY_FILE).read_text())
    assert summary["errors_by_reason"] == {
        "a directory, not a file": 1,
        "not a regular file": 1,
        "symlink pointing outside the root": 2,
        "unreadable file": 1,
    }
    assert summary["unreadable_directories"][0]["path"] == "linked_dir"


def test_a_file_uri_root_is_walked_like_its_folder(tmp_path: Path) -> None:
    """A `file://` root gets the same symlink and directory checks as a plain path."""
    root, _ = _hostile_tree(tmp_path)
    plain = ingest._find_files({"drawings": str(root)}, (".jpg",))[0]
    uri = ingest._find_files({"drawings": f"file://{root}"}, (".jpg",))[0]
    assert [(e.rel_path, e.error) for e in uri] == [(e.rel_path, e.error) for e in plain]
    assert {e.rel_path for e in uri if e.error == ingest.OUTSIDE_ROOT} == {"leak.jpg", "linked.jpg"}


# what each kind of path under a root is catalogued as (None: probed)
_KINDS = {
    "file": None,
    "dir": "a directory, not a file",
    "link in": None,
    "dir link in": "a directory, not a file",
    "link out": "symlink pointing outside the root",
    "dir link out": "symlink pointing outside the root",
    "fifo": "not a regular file",
}


def _make(path: Path, kind: str, root: Path, outside: Path) -> None:
    """One path of `kind`; the targets: `root/target.bin`, `outside/secret.jpg`, `outside`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = {
        "link in": root / "target.bin",
        "dir link in": root,
        "link out": outside / "secret.jpg",
        "dir link out": outside,
    }
    if kind == "file":
        path.write_bytes(b"x")
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(targets[kind], target_is_directory=kind.startswith("dir"))


def _free(path: Path) -> bool:
    """Whether `path` can be made: nothing there yet, and its folder is not a file or a link."""
    parent = path.parent
    taken = path.exists() or path.is_symlink()
    return not taken and not parent.is_symlink() and (parent.is_dir() or not parent.exists())


@settings(max_examples=60, deadline=None)
@given(
    paths=st.dictionaries(
        st.tuples(
            st.sampled_from(("", "a/", "b c/", "x.jpg/")),
            st.from_regex(r"[a-z0-9 ]{1,6}", fullmatch=True),
            st.sampled_from((".jpg", ".PNG", ".txt", "")),
        ),
        st.sampled_from(sorted(_KINDS)),
        max_size=12,
    )
)
def test_every_path_named_like_an_image_is_one_entry_with_its_reason(paths) -> None:
    """Random trees of files, folders, symlinks in and out of the root and FIFOs: each path with
    an image's extension is exactly one entry, with the reason its kind gives."""
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp) / "root", Path(tmp) / "outside"
        make_image(outside / "secret.jpg")
        (root / "target.bin").parent.mkdir()
        (root / "target.bin").write_bytes(b"x")
        expected: dict[str, str | None] = {}
        for (folder, stem, ext), kind in paths.items():
            rel = f"{folder}{stem.strip() or 'n'}{ext}"
            if not _free(root / rel):
                continue
            if folder == "x.jpg/" and not (root / "x.jpg").exists():
                expected["x.jpg"] = "a directory, not a file"
            _make(root / rel, kind, root, outside)
            if ext in (".jpg", ".PNG"):
                expected[rel] = _KINDS[kind]
        exts = ingest._normalise_extensions((".jpg", ".png"))
        entries = ingest._walk(str(root), "drawing", "drawings", exts, set(), [], Counter())
    assert {e.rel_path: e.error for e in entries} == expected

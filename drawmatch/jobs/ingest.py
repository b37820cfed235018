"""The ingest job: walk the drawing and artwork folders, probe every image, write the catalogue.

Per file: the id is the file stem, the bytes are hashed (sha256) and the image is fully decoded
(`drawmatch.core.images.open_image`) so truncated or otherwise broken files are caught; probing runs in
parallel with Ray Data. Drawings get their metadata from their IMAJ file names
(`drawmatch.data.imaj`), artworks from their artist folder and an optional metadata CSV. Every file
found is one catalogue row, `status='ok'` or `status='error'` with a reason; nothing is dropped.

Outputs under `config.out`: `catalogue.parquet`, `roots.json`, `id_to_path.csv`,
`ingest_summary.json` and `ingest_config.yaml`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting
from drawmatch.core.locks import catalogue_lock
from drawmatch.data import catalogue
from drawmatch.data.imaj import (
    VERSO_SIDES,
    CountryNormaliser,
    ParsedName,
    clean_stem,
    is_verso_name,
    normalise_age_group,
    parse_imaj_name,
    read_overrides,
    verso_words,
)
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class IngestConfig(Config):
    """Catalogue the images under `drawings_root` and `artworks_root` (files whose extension is in
    `extensions`), with optional artwork metadata, country aliases and per-file overrides (CSV)."""

    out: str = setting("drawmatch-out", help="output root")
    drawings_root: str | None = setting(None, help="folder of the drawings")
    artworks_root: str | None = setting(None, help="folder of the artworks")
    artworks_metadata_csv: str | None = setting(None, help="CSV of artwork metadata")
    country_aliases_csv: str | None = setting(None, help="CSV of country name aliases")
    overrides_csv: str | None = setting(None, help="CSV of per-file overrides")
    extensions: tuple[str, ...] = setting(
        (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"),
        help="image file extensions",
    )
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")
    ray: RayConfig = section(RayConfig)


SUMMARY_FILE = "ingest_summary.json"
ID_TO_PATH_FILE = "id_to_path.csv"
CONFIG_FILE = "ingest_config.yaml"

# artwork folders that hold no single artist's work (the thesis' hand-added cultural objects)
NON_ARTIST_FOLDERS = frozenset({"others"})
_LIST_LIMIT = 100  # entries kept in each list of the summary (counts are always complete)


@dataclass
class IngestResult:
    out: str
    catalogue_path: str
    roots_path: str
    id_to_path_path: str
    summary_path: str
    config_path: str
    rows: int = 0
    ok: int = 0
    errors: int = 0
    drawings: int = 0
    artworks: int = 0
    versos: int = 0
    unparsed_names: int = 0
    duplicate_ids: int = 0
    duplicate_content: int = 0
    unreadable_dirs: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_by_extension: dict[str, int] = field(default_factory=dict)
    empty_roots: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# artist names


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as CP437 / CP1252 / Latin-1 (`Du╠êrer` -> `Dürer`).

    Returns the text unchanged (NFC) when no such repair applies."""
    for encoding in ("cp437", "cp1252", "latin-1"):
        try:
            fixed = text.encode(encoding).decode("utf-8")
        except UnicodeError:
            continue
        if fixed != text:
            return unicodedata.normalize("NFC", fixed)
    return unicodedata.normalize("NFC", text)


def clean_artist_name(name: str | None) -> str | None:
    """A readable artist name from a folder or CSV value: mojibake repaired, `_` -> space."""
    if name is None:
        return None
    text = " ".join(repair_mojibake(str(name)).replace("_", " ").split())
    return text or None


def artist_from_folder(folder: str | None) -> str | None:
    """The artist of an artist folder ("Best Artworks of All Time" layout); None for `others`."""
    if folder is None or folder.strip().lower() in NON_ARTIST_FOLDERS:
        return None
    return clean_artist_name(folder)


# ---------------------------------------------------------------------------------------------
# walking


@dataclass(frozen=True)
class _Entry:
    collection: str
    root: str
    abs_path: str
    rel_path: str
    file_name: str
    stem: str
    error: str | None = None  # why the path is not probed: a catalogue error row


def _normalise_extensions(extensions: tuple[str, ...]) -> set[str]:
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if ext:
            out.add(ext if ext.startswith(".") else "." + ext)
    return out


def _skip_reason(stem: str, ext: str, extensions: set[str]) -> str | None:
    """Why a file is not an image to catalogue: its extension (`.txt`, `(none)`), or a name that
    is only an extension (`(no name)`); None for a file to catalogue."""
    if ext.lower() not in extensions:
        return ext.lower() or "(none)"
    if not stem.strip():
        return "(no name)"
    return None


def _walk_uri(
    root: str,
    collection: str,
    root_name: str,
    extensions: set[str],
    skip: set[str],
    skipped: Counter[str],
) -> list[_Entry]:
    """`_walk` for an object-store root: every object under the prefix, minus those under `skip`."""
    entries: list[_Entry] = []
    for path in storage.list_files(root, recursive=True):
        if any(path.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        rel = path[len(root.rstrip("/")) + 1 :]
        name = rel.rsplit("/", 1)[-1]
        stem, ext = os.path.splitext(name.strip())
        reason = _skip_reason(stem, ext, extensions)
        if reason is not None:
            skipped[reason] += 1
            continue
        entries.append(_Entry(collection, root_name, path, rel, name, stem.strip()))
    return entries


OUTSIDE_ROOT = "symlink pointing outside the root"
NOT_A_FILE = "a directory, not a file"


def _inside(path: str, real_root: str) -> bool:
    """Whether `path` resolves (symlinks followed) to `real_root` or a path under it."""
    target = os.path.realpath(path)
    return os.path.commonpath([real_root, target]) == real_root


def _path_error(path: str, real_root: str) -> str | None:
    """Why a file found under a root is not probed: a symlink out of the root, a broken symlink,
    or something that is not a regular file (a FIFO would block the reader); None to probe it."""
    if os.path.islink(path) and not _inside(path, real_root):
        return OUTSIDE_ROOT
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"unreadable file: {exc.strerror or type(exc).__name__}"
    return None if stat.S_ISREG(mode) else "not a regular file"


def _entry(
    collection: str, root_name: str, root: str, abs_path: str, name: str, error: str | None
) -> _Entry:
    """The entry of one path found by the walk; a name that is not UTF-8 is an error too."""
    rel = Path(os.path.relpath(abs_path, root)).as_posix()
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        error = "file name is not valid UTF-8"
        rel = os.fsencode(rel).decode("utf-8", "backslashreplace")
        name = os.fsencode(name).decode("utf-8", "backslashreplace")
    stem = os.path.splitext(name.strip())[0]
    return _Entry(collection, root_name, abs_path, rel, name, stem.strip(), error)


def _walk(
    root: str,
    collection: str,
    root_name: str,
    extensions: set[str],
    skip_dirs: set[str],
    unreadable: list[dict[str, str]],
    skipped: Counter[str],
) -> list[_Entry]:
    """Paths under a local root whose extension is in `extensions`, sorted: files to probe, and
    error entries for symlinks out of the root, directories named like images and other special
    files. Files left out are counted in `skipped` by extension; unreadable folders and symlinked
    folders (never followed) are listed in `unreadable`."""
    entries: list[_Entry] = []
    real_root = os.path.realpath(root)

    def onerror(exc: OSError) -> None:
        where = exc.filename if isinstance(exc.filename, str) else root
        rel = Path(os.path.relpath(where, root)).as_posix()
        unreadable.append(
            {"root": root_name, "path": rel, "reason": exc.strerror or type(exc).__name__}
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(
            d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in skip_dirs
        )
        for name in dirnames:
            path = os.path.join(dirpath, name)
            error = NOT_A_FILE if _inside(path, real_root) else OUTSIDE_ROOT
            if _skip_reason(*os.path.splitext(name.strip()), extensions) is None:
                entries.append(_entry(collection, root_name, root, path, name, error))
            elif os.path.islink(path):
                rel = Path(os.path.relpath(path, root)).as_posix()
                why = "symlink to a directory, not followed"
                unreadable.append({"root": root_name, "path": rel, "reason": why})
        for name in sorted(filenames):
            reason = _skip_reason(*os.path.splitext(name.strip()), extensions)
            if reason is not None:
                skipped[reason] += 1
                continue
            path = os.path.join(dirpath, name)
            entries.append(
                _entry(collection, root_name, root, path, name, _path_error(path, real_root))
            )
    return entries


# ---------------------------------------------------------------------------------------------
# probing (runs in Ray workers)


def probe_file(path: str, max_pixels: int) -> dict[str, Any]:
    """sha256, width, height and error reason of one file; never raises.

    Missing values are "" (sha256, error) and -1 (width, height) so Arrow types stay stable."""
    from drawmatch.core.images import ImageError, open_image

    sha, width, height, error = "", -1, -1, ""
    try:
        data = storage.read_bytes(path)  # read once: hashed and decoded from memory
    except OSError as exc:
        return {"sha256": "", "width": -1, "height": -1, "error": f"unreadable file: {exc}"}
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(path, max_pixels=max_pixels, data=data)
        width, height = img.size
        img.close()
    except ImageError as exc:
        error = exc.reason
    except Exception as exc:  # noqa: BLE001 - a probe must report, not crash the job
        error = f"probe failed: {type(exc).__name__}: {exc}"
    return {"sha256": sha, "width": int(width), "height": int(height), "error": error}


def _probe_batch(batch: pd.DataFrame, max_pixels: int) -> pd.DataFrame:
    rows = []
    for idx, raw in zip(batch["idx"], batch["path"], strict=True):
        path = os.fsdecode(bytes(raw))
        rows.append({"idx": int(idx), **probe_file(path, max_pixels)})
    return pd.DataFrame(rows, columns=["idx", "sha256", "width", "height", "error"])


def _probe_all(entries: list[_Entry], config: IngestConfig) -> dict[int, dict[str, Any]]:
    """Probe every entry with Ray Data; returns {index: probe}. Lost rows are reported, not
    dropped, by the caller."""
    items = [
        {"idx": i, "path": os.fsencode(e.abs_path)}
        for i, e in enumerate(entries)
        if e.error is None
    ]
    if not items:
        return {}
    import ray

    from drawmatch.runtime.ray_setup import init_ray

    init_ray(config.ray)
    blocks = max(1, min(len(items) // 16 + 1, 256))
    ds: Any = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        _probe_batch,
        batch_format="pandas",
        batch_size=16,
        fn_kwargs={"max_pixels": int(config.max_image_pixels)},
    )
    out: dict[int, dict[str, Any]] = {}
    for row in ds.take_all():
        out[int(row["idx"])] = {
            "sha256": str(row["sha256"]),
            "width": int(row["width"]),
            "height": int(row["height"]),
            "error": str(row["error"]),
        }
    return out


# ---------------------------------------------------------------------------------------------
# artwork metadata CSV


class _ArtworkMetadata:
    """A user's artwork metadata CSV, matched by file base name (`file` / `path`) or `id`."""

    FIELDS = ("artist", "title", "source")

    def __init__(self, path: str) -> None:
        df = storage.read_csv(path, dtype=str, keep_default_na=False)
        df.columns = [str(c).strip() for c in df.columns]
        keys = [c for c in ("file", "path", "id") if c in df.columns]
        if not keys:
            raise ValueError(
                f"{path}: an artworks metadata CSV needs a `file`, `path` or `id` column; "
                f"got {list(df.columns)}"
            )
        self.path = path
        self.fields = [c for c in self.FIELDS if c in df.columns]
        self.rows: list[dict[str, str]] = df.to_dict("records")  # type: ignore[assignment]
        self.by_base: dict[str, list[int]] = {}
        self.by_id: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows):
            for col in ("file", "path"):
                value = (row.get(col) or "").strip().replace("\\", "/")
                if value:
                    base = value.rsplit("/", 1)[-1].strip()
                    if i not in self.by_base.setdefault(base, []):
                        self.by_base[base].append(i)
            ident = (row.get("id") or "").strip()
            if ident:
                self.by_id.setdefault(ident, []).append(i)
        self.used: set[int] = set()
        self.ambiguous: list[str] = []

    def lookup(self, entry: _Entry) -> dict[str, str]:
        candidates = self.by_base.get(entry.file_name.strip(), [])
        if len(candidates) > 1:
            narrowed = [
                i
                for i in candidates
                if any(
                    ("/" + (self.rows[i].get(c) or "").replace("\\", "/").strip()).endswith(
                        "/" + entry.rel_path
                    )
                    for c in ("file", "path")
                )
            ]
            candidates = narrowed
        if not candidates:
            candidates = self.by_id.get(entry.stem, [])
        if len(candidates) != 1:
            if len(candidates) > 1:
                self.ambiguous.append(entry.rel_path)
            return {}
        i = candidates[0]
        self.used.add(i)
        return {f: self.rows[i][f].strip() for f in self.fields if self.rows[i][f].strip()}


# ---------------------------------------------------------------------------------------------
# the job


def _parent_ids(entries: list[_Entry]) -> dict[str, str]:
    """Drawing ids by the stem the name parser reads (`x.jpg` of `x.jpg.jpg` -> `x`)."""
    out: dict[str, str] = {}
    for e in entries:
        if e.collection == "drawing":
            out.setdefault(clean_stem(e.stem), e.stem)
    for e in entries:
        if e.collection == "drawing":
            out[e.stem] = e.stem  # an exact id wins
    return out


def _drawing_metadata(
    e: _Entry, normaliser: CountryNormaliser, parents: dict[str, str]
) -> tuple[dict[str, Any], ParsedName]:
    """Catalogue values a drawing's file name states, and the parsed name.

    A styled copy of the collection (`<parent>_oil`) takes its metadata from the parent's part of
    the name, its style, and `parent_id` when the parent is catalogued (else null, flagged)."""
    parsed = parse_imaj_name(e.stem)
    flags = list(parsed.warnings)
    values: dict[str, Any] = dict(
        year=parsed.year,
        age_group_raw=parsed.age_group_raw,
        age_group=parsed.age_group,
        country_code=parsed.country_code,
        country_iso3=normaliser.iso3(parsed.country_code),
        side=parsed.side,
        quality=parsed.quality,
        scan_uid=parsed.scan_uid,
        sub_drawing=parsed.sub_drawing,
        name_parsed=parsed.parsed,
    )
    if parsed.style is not None and parsed.parent_stem is not None:
        values["style"] = parsed.style
        parent = parents.get(parsed.parent_stem)
        if parent is not None and parent != e.stem:
            values["parent_id"] = parent
        else:
            flags.append(
                f"styled copy of {parsed.parent_stem!r}, which is not in the catalogue: "
                "no parent_id"
            )
    values["name_flags"] = "; ".join(flags) if flags else None
    return values, parsed


def _build_rows(
    entries: list[_Entry],
    probes: dict[int, dict[str, Any]],
    normaliser: CountryNormaliser,
    metadata: _ArtworkMetadata | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    unparsed: list[dict[str, Any]] = []
    parents = _parent_ids(entries)
    for i, e in enumerate(entries):
        row: dict[str, Any] = {c: None for c in catalogue.COLUMNS}
        row.update(
            id=e.stem,
            collection=e.collection,
            root=e.root,
            path=e.rel_path,
            status="ok",
            style="original",
            verso=False,
            file_name=e.file_name,
        )
        probe = probes.get(i)
        if e.error is not None:
            row["error"] = e.error
        elif probe is None:
            row["error"] = "not processed (lost by the probing stage)"
        else:
            row["sha256"] = probe["sha256"] or None
            if probe["error"]:
                row["error"] = probe["error"]
            else:
                row["width"], row["height"] = probe["width"], probe["height"]
        if row["error"] is not None:
            row["status"] = "error"

        if e.collection == "drawing":
            values, parsed = _drawing_metadata(e, normaliser, parents)
            row.update(values)
            if not parsed.parsed:
                unparsed.append({"path": e.rel_path, "warnings": list(parsed.warnings)})
        else:
            parts = e.rel_path.split("/")
            row["artist"] = artist_from_folder(parts[0]) if len(parts) > 1 else None
            if metadata is not None:
                found = metadata.lookup(e)
                if "artist" in found:
                    found["artist"] = artist_from_folder(found["artist"]) or ""
                row.update({k: v for k, v in found.items() if v})
        rows.append(row)
    return rows, unparsed


def is_verso_row(row: dict[str, Any]) -> bool:
    """A drawing whose side (as named or overridden) is `V` or `R-V`, whose file name states a
    verso in any spelling, or that lies in a folder named with a verso word (`versos/`,
    `Back/`; `drawmatch.data.imaj.VERSO_WORDS`): private. An override cannot make it public."""
    if row["collection"] != "drawing":
        return False
    folders = str(row["path"]).split("/")[:-1]
    return (
        row["side"] in VERSO_SIDES
        or is_verso_name(row["file_name"])
        or any(verso_words(folder) for folder in folders)
    )


def _apply_overrides(
    rows: list[dict[str, Any]],
    overrides: dict[str, dict[str, object]],
    normaliser: CountryNormaliser,
) -> tuple[int, list[str]]:
    by_key: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for key in {row["file_name"], row["file_name"].strip(), row["id"]}:
            by_key.setdefault(key, []).append(i)
    applied = 0
    unmatched = []
    for key, values in overrides.items():
        hits = sorted(set(by_key.get(key, [])))
        if not hits:
            unmatched.append(key)
            continue
        for i in hits:
            row = rows[i]
            row.update(values)
            if "country_code" in values and "country_iso3" not in values:
                row["country_iso3"] = normaliser.iso3(str(values["country_code"]))
            if "age_group_raw" in values and "age_group" not in values:
                row["age_group"] = normalise_age_group(str(values["age_group_raw"]))
            applied += 1
    return applied, unmatched


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the content hash of a zero-byte file


def _mark_duplicates(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Rename repeated ids and flag equal content.

    Ids are unique across the whole catalogue: a repeated id (in one collection, or a drawing and
    an artwork with the same file stem) keeps its first row (rows come in a fixed order: artworks
    first) and every other file becomes `<id>~2`, ... with status error and a reason naming both
    files. Zero-byte files are errors (`zero-byte file`), never content duplicates. Among ok rows
    with equal content, every id but the first in sorted id order gets `duplicate_of` = that
    first id, whatever the order of the files on disk.
    """
    first: dict[str, dict[str, Any]] = {}
    taken = {row["id"] for row in rows}
    counts: Counter[str] = Counter()
    dup_ids = []
    for row in rows:
        stem = row["id"]
        counts[stem] += 1
        if counts[stem] == 1:
            first[stem] = row
            continue
        n = counts[stem]
        new_id = f"{stem}~{n}"
        while new_id in taken:
            n += 1
            new_id = f"{stem}~{n}"
        taken.add(new_id)
        original = first[stem]
        first_path = f"{original['root']}/{original['path']}"
        path = f"{row['root']}/{row['path']}"
        row["id"] = new_id
        row["status"] = "error"
        if row["collection"] == original["collection"]:
            row["error"] = f"duplicate id: {stem!r} is also {first_path}"
        else:
            row["error"] = (
                f"id in both collections: {stem!r} names the {row['collection']} {path} and the "
                f"{original['collection']} {first_path}; rename one of them"
            )
        dup_ids.append({"id": new_id, "path": path, "first": first_path})
    for row in rows:
        if row["sha256"] == _EMPTY_SHA256 and row["status"] == "ok":
            row["status"], row["error"] = "error", "zero-byte file"
    by_hash: dict[str, list[str]] = {}
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        if row["sha256"] and row["status"] == "ok":
            by_hash.setdefault(row["sha256"], []).append(row["id"])
    dup_content = []
    for ids in by_hash.values():
        head, *rest = sorted(ids)
        for other in rest:
            by_id[other]["duplicate_of"] = head
            dup_content.append({"id": other, "duplicate_of": head})
    dup_content.sort(key=lambda d: d["id"])
    return dup_ids, dup_content


def _counts(series: pd.Series) -> dict[str, int]:
    values = series.astype(object).where(series.notna(), None)
    counter = Counter("null" if v is None else str(v) for v in values)
    return dict(sorted(counter.items()))


def _summary(
    df: pd.DataFrame,
    config: IngestConfig,
    unparsed: list[dict[str, Any]],
    unreadable: list[dict[str, str]],
    dup_ids: list[dict[str, str]],
    dup_content: list[dict[str, str]],
    overrides_applied: int,
    overrides_unmatched: list[str],
    metadata: _ArtworkMetadata | None,
) -> dict[str, Any]:
    drawings = df[df["collection"] == "drawing"]
    errors = df[df["status"] == "error"]
    reasons = errors["error"].astype(str).str.split(":", n=1).str[0]
    unknown = drawings[drawings["country_code"].notna() & drawings["country_iso3"].isna()]
    nonstandard = drawings[drawings["age_group_raw"].notna() & drawings["age_group"].isna()]
    summary: dict[str, Any] = {
        "roots": {"drawings": config.drawings_root, "artworks": config.artworks_root},
        "rows": len(df),
        "ok": int((df["status"] == "ok").sum()),
        "errors": len(errors),
        "by_collection": _counts(df["collection"]),
        "versos": int(df["verso"].sum()),
        "drawings_usable": int(
            ((df["status"] == "ok") & ~df["verso"] & (df["collection"] == "drawing")).sum()
        ),
        "by_year": _counts(drawings["year"]),
        "by_age_group": _counts(drawings["age_group"]),
        "by_country_iso3": _counts(drawings["country_iso3"]),
        "by_side": _counts(drawings["side"]),
        "errors_by_reason": dict(sorted(Counter(reasons).items())),
        "errors_list": [
            {"id": i, "path": f"{r}/{p}", "error": e}
            for i, r, p, e in zip(
                errors["id"], errors["root"], errors["path"], errors["error"], strict=True
            )
        ][:_LIST_LIMIT],
        "unparsed_names": len(unparsed),
        "flagged_names": int(drawings["name_flags"].notna().sum()),
        "styled_copies": int((drawings["style"] != "original").sum()),
        "unparsed_examples": unparsed[:_LIST_LIMIT],
        "unknown_country_codes": _counts(unknown["country_code"]),
        "non_standard_age_groups": _counts(nonstandard["age_group_raw"]),
        "duplicate_ids": len(dup_ids),
        "duplicate_ids_list": dup_ids[:_LIST_LIMIT],
        "duplicate_content": len(dup_content),
        "duplicate_content_list": dup_content[:_LIST_LIMIT],
        "unreadable_directories": unreadable,
        "overrides": {
            "file": config.overrides_csv,
            "applied": overrides_applied,
            "unmatched": overrides_unmatched,
        },
    }
    if metadata is not None:
        summary["artworks_metadata"] = {
            "file": metadata.path,
            "rows": len(metadata.rows),
            "matched": len(metadata.used),
            "unmatched_rows": len(metadata.rows) - len(metadata.used),
            "ambiguous_files": metadata.ambiguous[:_LIST_LIMIT],
        }
    return summary


def _print_summary(summary: dict[str, Any], out: str) -> None:
    """Print the headline counts, then one line for each kind of problem found."""
    print(
        f"ingest: {summary['rows']} files ({summary['by_collection']}), "
        f"{summary['ok']} ok, {summary['errors']} in error, {summary['versos']} versos"
    )
    unmatched = summary["overrides"]["unmatched"]
    problems = [
        (summary["errors_by_reason"], f"errors by reason: {summary['errors_by_reason']}"),
        (
            summary["unparsed_names"],
            f"{summary['unparsed_names']} drawing names do not follow the IMAJ convention",
        ),
        (
            summary["unknown_country_codes"],
            f"country codes without ISO 3166 code: {summary['unknown_country_codes']}",
        ),
        (
            summary["duplicate_ids"] or summary["duplicate_content"],
            f"{summary['duplicate_ids']} repeated ids, "
            f"{summary['duplicate_content']} files with the same content as another",
        ),
        (
            summary["skipped_files"],
            f"{summary['skipped_files']} files skipped for their extension: "
            f"{summary['skipped_by_extension']}",
        ),
        (summary["empty_roots"], f"no image files under {', '.join(summary['empty_roots'])}"),
        (
            summary["unreadable_directories"],
            f"{len(summary['unreadable_directories'])} unreadable directories (see summary)",
        ),
        (unmatched, f"{len(unmatched)} override rows match no file"),
    ]
    for found, line in problems:
        if found:
            print(f"  {line}")
    print(f"  catalogue and summary written to {out}")


def _styled_copies_to_keep(out: str, df: pd.DataFrame) -> pd.DataFrame:
    """Style copies that augment wrote under `out` (root `out`) in the previous catalogue, whose
    parent is in the new catalogue, usable (ok, not a verso) and unchanged (same sha256): a
    re-ingest keeps them, so augment does not make them again. A copy of a parent now read as a
    verso is dropped."""
    if not storage.exists(catalogue.catalogue_path(out)):
        return df.iloc[:0]
    previous = catalogue.read_catalogue(out)
    if "parent_sha256" not in previous.columns:
        return df.iloc[:0]
    styled = previous[(previous["root"] == "out") & previous["parent_id"].notna()]
    parents = df[catalogue.usable(df)].drop_duplicates("id").set_index("id")["sha256"]
    # a parent missing or left out reindexes to NA: compared as "" (never the same)
    current = parents.reindex(styled["parent_id"]).astype(object).fillna("").to_numpy()
    same = (current != "") & (
        current == styled["parent_sha256"].astype(object).fillna("").to_numpy()
    )
    kept = styled[same & ~styled["id"].isin(set(df["id"]))]
    return kept.reindex(columns=df.columns).astype(df.dtypes.to_dict(), errors="ignore")


@catalogue_lock("ingest")  # one writer of catalogue.parquet per output root (drawmatch.core.locks)
def run(config: IngestConfig) -> IngestResult:
    """Catalogue the drawings and artworks named by `config`; see the module docstring."""
    roots = _check_inputs(config)
    # read user tables first: a bad table fails before any work
    normaliser = CountryNormaliser(config.country_aliases_csv)
    overrides = read_overrides(config.overrides_csv) if config.overrides_csv else {}
    metadata = (
        _ArtworkMetadata(config.artworks_metadata_csv) if config.artworks_metadata_csv else None
    )
    entries, unreadable, skipped, empty_roots = _find_files(roots, config.extensions)

    probes = _probe_all(entries, config)
    rows, unparsed = _build_rows(entries, probes, normaliser, metadata)
    applied, unmatched = _apply_overrides(rows, overrides, normaliser)
    for row in rows:
        row["verso"] = is_verso_row(row)
    dup_ids, dup_content = _mark_duplicates(rows)
    df = catalogue.typed_frame(rows)

    n_ok, n_err = int((df["status"] == "ok").sum()), int((df["status"] == "error").sum())
    if len(df) != len(entries) or n_ok + n_err != len(entries):
        raise RuntimeError(
            f"ingest lost rows: {len(entries)} files in, {n_ok} ok + {n_err} in error out"
        )

    out = config.out
    cat_path, id_to_path, kept = _write_catalogue(out, df, roots)
    summary = _summary(
        df, config, unparsed, unreadable, dup_ids, dup_content, applied, unmatched, metadata
    )
    summary["skipped_by_extension"] = dict(sorted(skipped.items()))
    summary["skipped_files"] = sum(skipped.values())
    summary["empty_roots"] = empty_roots
    summary_path = storage.join(out, SUMMARY_FILE)
    storage.write_bytes(summary_path, json.dumps(summary, indent=2, ensure_ascii=False).encode())
    save_config(config, storage.join(out, CONFIG_FILE))
    _print_summary(summary, str(out))
    if len(kept):
        print(f"  style copies kept from the previous catalogue (parents unchanged): {len(kept)}")
    return IngestResult(
        out=str(out),
        catalogue_path=str(cat_path),
        roots_path=storage.join(out, catalogue.ROOTS_FILE),
        id_to_path_path=id_to_path,
        summary_path=summary_path,
        config_path=storage.join(out, CONFIG_FILE),
        rows=len(df),
        ok=n_ok,
        errors=n_err,
        drawings=int((df["collection"] == "drawing").sum()),
        artworks=int((df["collection"] == "artwork").sum()),
        versos=int(df["verso"].sum()),
        unparsed_names=len(unparsed),
        duplicate_ids=len(dup_ids),
        duplicate_content=len(dup_content),
        unreadable_dirs=len(unreadable),
        errors_by_reason=dict(summary["errors_by_reason"]),
        skipped_by_extension=dict(summary["skipped_by_extension"]),
        empty_roots=list(empty_roots),
    )


def _check_inputs(config: IngestConfig) -> dict[str, str]:
    """Check that the roots are directories and the tables files; the absolute roots by name."""
    if config.drawings_root is None and config.artworks_root is None:
        raise ValueError("ingest needs drawings_root and/or artworks_root")
    roots: dict[str, str] = {}
    for name, root in (("drawings", config.drawings_root), ("artworks", config.artworks_root)):
        if root is not None:
            if not storage.is_dir(root):
                raise FileNotFoundError(f"{name}_root {root!r} is not a directory")
            roots[name] = storage.absolute(root)
    for name, value in (
        ("artworks_metadata_csv", config.artworks_metadata_csv),
        ("country_aliases_csv", config.country_aliases_csv),
        ("overrides_csv", config.overrides_csv),
    ):
        if value is not None and not storage.is_file(value):
            raise FileNotFoundError(f"{name} {value!r} is not a file")
    return roots


def _find_files(
    roots: dict[str, str], extensions_asked: tuple[str, ...]
) -> tuple[list[_Entry], list[dict[str, str]], Counter[str], list[str]]:
    """Walk each root (never into the other one): the image files sorted by collection and path,
    the unreadable directories, the files skipped by extension, and the roots with no image."""
    extensions = _normalise_extensions(extensions_asked)
    # a `file://` root is walked as the folder it names: its symlinks are checked like a path's
    local = {name: root.removeprefix("file://") for name, root in roots.items()}
    real_roots = {
        name: root if storage.is_uri(root) else os.path.realpath(root)
        for name, root in local.items()
    }
    unreadable: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    empty_roots: list[str] = []
    entries: list[_Entry] = []
    for name, collection in (("drawings", "drawing"), ("artworks", "artwork")):
        if name in roots:
            others = {r for n, r in real_roots.items() if n != name}
            if storage.is_uri(local[name]):
                found = _walk_uri(roots[name], collection, name, extensions, others, skipped)
            else:
                found = _walk(
                    local[name], collection, name, extensions, others, unreadable, skipped
                )
            if not found:
                empty_roots.append(f"{name}_root")
                print(
                    f"warning: no image files under {name}_root {roots[name]} "
                    f"(extensions {', '.join(sorted(extensions))}): its catalogue part is empty"
                )
            entries += found
    entries.sort(key=lambda e: (e.collection, e.rel_path))
    return entries, unreadable, skipped, empty_roots


def _write_catalogue(
    out: str, df: pd.DataFrame, roots: dict[str, str]
) -> tuple[str, str, pd.DataFrame]:
    """Write the catalogue (with the style copies kept from the previous one), the roots and the
    id-to-path table; the catalogue's path, the table's path and the kept style copies."""
    storage.makedirs(out)
    kept = _styled_copies_to_keep(out, df)
    full = pd.concat([df, kept], ignore_index=True) if len(kept) else df
    cat_path = catalogue.write_catalogue(full, out)
    catalogue.write_roots(out, roots)
    id_map = df[["id", "path", "root"]]
    id_to_path = storage.join(out, ID_TO_PATH_FILE)
    storage.write_bytes(id_to_path, id_map.to_csv(index=False).encode())
    return str(cat_path), id_to_path, kept

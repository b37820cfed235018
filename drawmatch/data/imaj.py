"""IMAJ file names, country codes and user overrides: pure functions, no I/O but reading CSVs.

The IMAJ convention (thesis sec. 3.2) is `YEAR_AGEGROUP_UID_COUNTRY_SIDE_QUALITY`, e.g.
`2004_14-17_1013_BLG_R_C`. Real names vary; `parse_imaj_name` reads these layouts:

- renamed scans: `YEAR_AGE_UID[_COUNTRY][_SUB][_SIDE[_QUALITY]][_crop]`, UID two or more digits,
  optionally with a letter (`0433a`, `0007B`) or `bis`, COUNTRY a code with a capital letter
  (`FRA`, `KAZa`, `9NA`) or the placeholder `0`, possibly empty (`1995__0275__R_C`), SUB a
  lowercase sub-drawing letter (`..._MAR_a_V_C`; `0230a_a_R_C` has no country, sub-drawing `a`);
- raw scans with a batch number and no country: `YEAR_AGE_BATCH_SCAN[_SUB][_SIDE_QUALITY]`
  (`1995_14-17_64_0072_R_C`, `1998_10-13_43_0004a_V_C`, copies `..._0002 (2)`);
- raw scans with neither batch nor country: `YEAR_AGE_SCAN[_SIDE_QUALITY]` (`2000_6-9_310045`);
- the collection's styled copies: a parent stem plus `_gray`, `_oil`, `_pencil_gray`, `_texture`
  or `_water` (`STYLE_SUFFIXES`), returned with `style` (the project's style name:
  `water` -> `watercolor`, `pencil_gray` -> `pencil`), `parent_stem`, and the parent's fields;
- quirks, read and noted: `..._0090_1_0091_2_RUS_R_C` (one scan for two numbers: the first is
  the uid), stray fields between side and quality (`..._MEX_R_0004_C`, `..._BEL_R_0001_A_C`: the
  last letter is the quality), a number or an unknown capital where the side should be
  (`KAZ_01_C`, `UKR_b_B_C`: no side), a stray capital or number field (`..._0016_Z_V_C`),
  doubled underscores and extensions (`.jpg.jpg`), crops (`_crop`, `_crop1`), stray spaces.

Sides are `R`, `V` and `R-V` (a recto-verso scan), in any spelling (`v`, `RV`, `R_V`, `a-V`,
`TCH-V`, `-V`); `V` and `R-V` show the back of a drawing, which may carry a child's name, so
`is_verso_name` and `ParsedName.verso` treat both as versos. The side field may also be the word
`recto`, `verso` or `recto-verso`. Names from other collections state a verso with a word
(`Verso.jpg`, `back_verso.jpg`, `scanBack.png`): `is_verso_name` lists the words. Qualities are
`C` (consultation) and `A` (archive), the two the thesis names; any other letter is kept and
flagged.

The year may be `Divers` (miscellaneous: year unknown); a year outside 1990-2030 is kept and
flagged as implausible. An age group outside the six standard ones keeps its raw value and takes
the group it lies inside (`14-16` -> `14-17`, `3` -> `3-5`), or none when it spans several
(`17-25`), with a note. A name that fits no layout is flagged: `parsed=False`, a warning saying
why, no uid, country or sub-drawing; the year, age group and side, which sit at fixed places,
are still read. Every deviation from the convention is a warning with its reason; nothing is
guessed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from drawmatch.core import storage
from drawmatch.data.catalogue import ARTWORK_COLUMNS, DRAWING_COLUMNS

AGE_GROUPS = ("3-5", "6-9", "10-13", "14-17", "18-25", "MS")
# age bounds of the numeric groups, to read a non-standard range that lies inside one of them
_AGE_BOUNDS = {
    "3-5": (3, 5),
    "6-9": (6, 9),
    "10-13": (10, 13),
    "14-17": (14, 17),
    "18-25": (18, 25),
}
SIDES = ("R", "V", "R-V")
# sides whose scan shows the back of a drawing: private (a verso may carry a child's name)
VERSO_SIDES = frozenset({"V", "R-V"})
# scan qualities the thesis names (sec. 3.2): C = consultation, A = archive (high quality)
QUALITIES = ("C", "A")
PLAUSIBLE_YEARS = (1990, 2030)
# the collection's styled copies: `<parent stem>_<suffix>` -> project style (settings.STYLES)
STYLE_SUFFIXES = {
    "pencil_gray": "pencil",
    "pencil_grey": "pencil",
    "pencil": "pencil",
    "gray": "gray",
    "grey": "gray",
    "oil": "oil",
    "texture": "texture",
    "watercolour": "watercolor",
    "watercolor": "watercolor",
    "water": "watercolor",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")

_YEAR_RE = re.compile(r"(?:19|20)\d\d")
_AGE_RE = re.compile(r"\d{1,2}(?:-\d{1,2})?|M-?S", re.IGNORECASE)
_RANGE_RE = re.compile(r"(\d{1,2})(?:-(\d{1,2}))?")
# a uid or scan number: digits, optionally a letter (`0230a`, `0007B`) or `bis`, and a copy
# marker `(2)`
_UID_RE = re.compile(r"(\d{2,})(bis|ter|[A-Za-z])?(?:\s*\((\d+)\))?", re.IGNORECASE)
_BATCH_RE = re.compile(r"\d{1,3}")
_COUNTRY_RE = re.compile(r"0|(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{2,5}")
_SUB_RE = re.compile(r"[a-z]{1,2}")
_LETTER_RE = re.compile(r"[A-Za-z]")
_CROP_RE = re.compile(r"crop\d*", re.IGNORECASE)
# the side field as written (upper-cased): the convention's letters and the words in full
_SIDE_ALIASES = {
    "R": "R",
    "V": "V",
    "R-V": "R-V",
    "RV": "R-V",
    "RECTO": "R",
    "VERSO": "V",
    "RECTO-VERSO": "R-V",
    "RECTOVERSO": "R-V",
}
# words that name the back of a sheet anywhere in a file name (casefolded), from any collection:
# `rev` (revision), `dos` (two, DOS) and `retro` are left out for their everyday meanings
VERSO_WORDS = frozenset(
    {
        "verso",
        "versos",
        "rectoverso",
        "vso",
        "vo",
        "back",
        "backs",
        "backside",
        "reverse",
        "reverso",
        "dorso",
        "rückseite",
        "rueckseite",
    }
)
# abbreviations that a name following the convention may use as its country code instead
_VERSO_ABBREVIATIONS = frozenset({"vso", "vo"})
# what separates the tokens of a name: anything but a letter or a digit
_TOKEN_SEP_RE = re.compile(r"[\W_]+")
# a side glued to what precedes it by a hyphen: `a-V` (sub-drawing a, verso), `TCH-V`, `-V`
_GLUED_SIDE_RE = re.compile(r"(.*?)-(R-V|RV|V|R)", re.IGNORECASE)

NOT_IMAJ = "not an IMAJ name (YEAR_AGEGROUP_UID_COUNTRY_SIDE_QUALITY)"


@dataclass(frozen=True)
class ParsedName:
    """What an IMAJ file name states. Unknown or unreadable values are None.

    `parsed` is False when the name fits no layout; what could still be read at a fixed place
    (year, age group, and always the side) is kept. `style`/`parent_stem` are set for the
    collection's styled copies (`<parent stem>_oil`); the other fields then describe the parent.
    `warnings` gives every deviation from the convention, each with its reason."""

    year: int | None = None
    age_group_raw: str | None = None
    age_group: str | None = None
    scan_uid: str | None = None
    country_code: str | None = None
    side: str | None = None
    quality: str | None = None
    sub_drawing: str | None = None
    batch: str | None = None
    copy: str | None = None
    crop: bool = False
    style: str | None = None
    parent_stem: str | None = None
    parsed: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def verso(self) -> bool:
        """The scan shows the back of a drawing (side `V` or `R-V`): private."""
        return self.side in VERSO_SIDES


def _unparsed(why: str, **known: object) -> ParsedName:
    return ParsedName(parsed=False, warnings=(why,), **known)  # type: ignore[arg-type]


def age_group_of(raw: str | None) -> tuple[str | None, str | None]:
    """The collection's age group of a raw age field and a note on any deviation.

    A standard group is itself; `M-S` is `MS`; a range or single age that lies inside one group
    is that group (`14-16` -> `14-17`, `3` -> `3-5`); anything else (`17-25` spans two groups,
    `0-0`, `8-80`) has no group."""
    if raw is None or not raw.strip():
        return None, None
    value = raw.strip().upper()
    if value in ("MS", "M-S"):
        return "MS", (None if value == "MS" else f"age group {raw!r} read as 'MS'")
    if value in AGE_GROUPS:
        return value, None
    m = _RANGE_RE.fullmatch(value)
    if m is None:
        return None, f"age group {raw!r} is not an age range"
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if low > high:
        return None, f"non-standard age group {raw!r}: reversed range, no age group"
    for group, (first, last) in _AGE_BOUNDS.items():
        if first <= low and high <= last:
            return group, f"non-standard age group {raw!r} read as {group!r} (lies inside it)"
    return None, f"non-standard age group {raw!r} spans several groups or none: no age group"


def normalise_age_group(raw: str | None) -> str | None:
    """`14-17` -> `14-17`, `M-S` -> `MS`, `14-16` -> `14-17`; a range outside one group -> None."""
    return age_group_of(raw)[0]


def _side_of(token: str) -> tuple[str, str] | None:
    """(side, what was glued before it) if `token` states a side, in any spelling."""
    key = token.upper().replace(" ", "")
    if key in _SIDE_ALIASES:
        return _SIDE_ALIASES[key], ""
    m = _GLUED_SIDE_RE.fullmatch(token)
    if m is not None and not _RANGE_RE.fullmatch(m.group(1)):
        return _SIDE_ALIASES[m.group(2).upper()], m.group(1)
    return None


def _find_side(rest: list[str]) -> tuple[int, int, str, str] | None:
    """The last side field of `rest`: (first index, index after it, side, glued prefix)."""
    for i in range(len(rest) - 1, -1, -1):
        found = _side_of(rest[i])
        if found is None:
            continue
        side, prefix = found
        if side == "V" and not prefix and i > 0 and rest[i - 1].upper() == "R":
            return i - 1, i + 1, "R-V", ""  # `R_V`: a recto-verso scan
        return i, i + 1, side, prefix
    return None


def _scan_side(tokens: list[str]) -> str | None:
    found = _find_side([t.strip() for t in tokens if t.strip()])
    return found[2] if found else None


def clean_stem(stem: str, warnings: list[str] | None = None) -> str:
    """A stem as the parser reads it: NFC, outer whitespace and stray image extensions removed
    (`x.jpg` of `x.jpg.jpg`)."""
    notes = warnings if warnings is not None else []
    text = unicodedata.normalize("NFC", stem)
    if text != text.strip():
        notes.append("stray whitespace around the name")
        text = text.strip()
    while True:
        base, ext = os.path.splitext(text)
        if ext.lower() not in IMAGE_EXTENSIONS or not base.strip():
            break
        notes.append(f"doubled extension {ext!r} removed")
        text = base.strip()
    return text


def split_style(text: str) -> tuple[str, str, str] | None:
    """(parent stem, project style, suffix as written) of a styled copy's name, else None."""
    lower = text.lower()
    for suffix, style in STYLE_SUFFIXES.items():
        if lower.endswith("_" + suffix) and len(text) > len(suffix) + 1:
            return text[: -len(suffix) - 1], style, text[-len(suffix) :]
    return None


def parse_imaj_name(stem: str) -> ParsedName:
    """Parse a file stem (no extension) following the IMAJ naming convention; never raises."""
    if not isinstance(stem, str):
        return _unparsed(NOT_IMAJ)
    warnings: list[str] = []
    text = clean_stem(stem, warnings)
    styled = split_style(text)
    if styled is not None:
        parent, style, written = styled
        base = _parse_plain(parent, list(warnings))
        if base.year is not None or base.parsed:
            note = f"styled copy ({written!r} -> {style!r}) of {parent!r}"
            return replace(base, style=style, parent_stem=parent, warnings=(note, *base.warnings))
    return _parse_plain(text, warnings)


def _parse_plain(text: str, warnings: list[str]) -> ParsedName:
    """Parse a stem without a style suffix: year, age group, markers, side and quality, then the
    uid, batch, country and sub-drawing between them."""
    tokens = text.split("_")
    if any(t != t.strip() for t in tokens):
        warnings.append("stray whitespace inside a field")
        tokens = [" ".join(t.split()) for t in tokens]
    if len(tokens) < 3:
        return _unparsed(NOT_IMAJ, side=_scan_side(tokens))
    is_year, year = _read_year(tokens[0], warnings)
    if not is_year:
        return _unparsed(NOT_IMAJ, side=_scan_side(tokens))
    read_age = _read_age(tokens, warnings)
    if read_age is None:
        why = f"{NOT_IMAJ}: {tokens[1]!r} is not an age group"
        return _unparsed(why, year=year, side=_scan_side(tokens[2:]))
    age_raw, rest = read_age
    age_group, age_note = age_group_of(age_raw)
    if age_note:
        warnings.append(age_note)
    known: dict[str, object] = dict(year=year, age_group_raw=age_raw, age_group=age_group)
    rest, crop, copy = _strip_markers(rest, warnings)
    rest, side, quality, why_not = _read_side_and_quality(rest, warnings)
    if why_not:
        return _unparsed(why_not, **known, side=side)
    known.update(side=side, quality=quality)

    middle = _parse_middle(rest, warnings)
    if isinstance(middle, str):
        return _unparsed(f"{NOT_IMAJ}: {middle}", **known)
    if middle["copy"] is not None:
        copy = middle["copy"]
    if copy is not None:
        warnings.append(f"copy marker ({copy})")
    if side is None and quality is None:
        warnings.append("no side or quality field")
    return ParsedName(
        year=year,
        age_group_raw=age_raw,
        age_group=age_group,
        scan_uid=middle["scan_uid"],
        country_code=middle["country_code"],
        side=side,
        quality=quality,
        sub_drawing=middle["sub_drawing"],
        batch=middle["batch"],
        copy=copy,
        crop=crop,
        parsed=True,
        warnings=tuple(warnings),
    )


def _read_year(token: str, warnings: list[str]) -> tuple[bool, int | None]:
    """Whether the first field is a year (or `Divers`: year unknown), and the year."""
    if _YEAR_RE.fullmatch(token):
        year = int(token)
        if not PLAUSIBLE_YEARS[0] <= year <= PLAUSIBLE_YEARS[1]:
            warnings.append(
                f"implausible year {year}: outside {PLAUSIBLE_YEARS[0]}-{PLAUSIBLE_YEARS[1]}"
            )
        return True, year
    if token.lower() == "divers":
        warnings.append(f"year {token!r} is not a year")
        return True, None
    return False, None


def _read_age(tokens: list[str], warnings: list[str]) -> tuple[str | None, list[str]] | None:
    """The raw age group and the fields after it, or None when the second field is not one (a
    doubled underscore may push it one field on)."""
    if tokens[1] == "":
        if _AGE_RE.fullmatch(tokens[2]) and not tokens[2].isdigit():
            warnings.append("doubled underscore before the age group")
            return tokens[2], tokens[3:]
        warnings.append("no age group")
        return None, tokens[2:]
    if _AGE_RE.fullmatch(tokens[1]):
        return tokens[1], tokens[2:]
    if _UID_RE.fullmatch(tokens[1]) and len(tokens[1]) >= 4:
        warnings.append("no age group field")
        return None, tokens[1:]
    return None


def _strip_markers(rest: list[str], warnings: list[str]) -> tuple[list[str], bool, str | None]:
    """Drop empty fields, crop markers and copy markers (`bis`, `ter`): the fields left, whether
    it is a crop, and the copy marker."""
    if "" in rest:
        warnings.append("empty field(s)")
        rest = [t for t in rest if t]
    crop = False
    copy: str | None = None
    kept = []
    for token in rest:
        if _CROP_RE.fullmatch(token):
            crop = True
            if token.lower() != "crop":
                warnings.append(f"crop marker {token!r}")
        elif token.lower() in ("bis", "ter"):
            copy = token.lower()
        else:
            kept.append(token)
    return kept, crop, copy


def _read_side_and_quality(
    rest: list[str], warnings: list[str]
) -> tuple[list[str], str | None, str | None, str]:
    """The last side field, then at most a quality letter and stray fields: the fields before the
    side, the side, the quality, and why the name cannot be read (empty when it can)."""
    side: str | None = None
    quality: str | None = None
    found = _find_side(rest)
    if found is not None:
        first, after, side, prefix = found
        written = "_".join(rest[first:after])
        if written != side:
            warnings.append(f"side {written!r} read as {side!r}")
        tail = rest[after:]
        rest = rest[:first] + ([prefix] if prefix else [])
        if any(not (_LETTER_RE.fullmatch(t) or t.isdigit()) for t in tail):
            return rest, side, None, f"{NOT_IMAJ}: cannot read {'_'.join(tail)!r} after the side"
        if tail and _LETTER_RE.fullmatch(tail[-1]):
            quality = tail.pop()
        else:
            warnings.append("no quality field")
        if tail:
            warnings.append(f"stray field(s) {'_'.join(tail)!r} between side and quality ignored")
    else:
        if rest and rest[-1] in QUALITIES and len(rest) >= 2:
            quality = rest.pop()
        if len(rest) >= 3 and _LETTER_RE.fullmatch(rest[-1]) and rest[-1].isupper():
            warnings.append(f"unknown side {rest[-1]!r}: no side")
            rest.pop()
        elif len(rest) >= 3 and rest[-1].isdigit() and len(rest[-1]) <= 2:
            warnings.append(f"number {rest[-1]!r} where the side should be: no side")
            rest.pop()
        elif quality is not None:
            warnings.append("no side field")
    if quality is not None:
        if quality != quality.upper():
            warnings.append(f"quality {quality!r} read as {quality.upper()!r}")
            quality = quality.upper()
        if quality not in QUALITIES:
            warnings.append(f"unknown quality letter {quality!r} (known: {', '.join(QUALITIES)})")
    return rest, side, quality, ""


def _parse_middle(rest: list[str], warnings: list[str]) -> dict[str, str | None] | str:
    """uid, batch, country and sub-drawing from the fields between age group and side, or the
    reason they cannot be read."""
    out: dict[str, str | None] = dict(
        scan_uid=None, batch=None, country_code=None, sub_drawing=None, copy=None
    )
    if not rest:
        return "no uid"
    first = _UID_RE.fullmatch(rest[0])
    second = _UID_RE.fullmatch(rest[1]) if len(rest) >= 2 else None
    if (
        len(rest) == 5
        and first
        and rest[1] == "1"
        and _UID_RE.fullmatch(rest[2])
        and rest[3] == "2"
        and _COUNTRY_RE.fullmatch(rest[4])
    ):
        # `0090_1_0091_2_RUS`: one scan named by two numbers; the first is the uid
        warnings.append(f"name joins scan numbers {rest[0]!r} and {rest[2]!r}; uid is the first")
        out.update(scan_uid=rest[0], country_code=rest[4])
        return out
    if _BATCH_RE.fullmatch(rest[0]) and second and len(second.group(1)) >= 4:
        # raw scan: BATCH_SCAN, no country
        out["batch"] = rest[0]
        uid = second
        others = rest[2:]
        warnings.append("no country field")
    elif first:
        uid = first
        others = rest[1:]
        if others and _COUNTRY_RE.fullmatch(others[0]):
            out["country_code"] = others.pop(0)
        elif others and others[0] != "0":
            warnings.append("no country field")
        elif not others:
            warnings.append("no country")
    else:
        return f"cannot read {'_'.join(rest)!r} after the age group"
    number, letter, copy = uid.group(1, 2, 3)
    out["scan_uid"] = number + (letter or "")
    out["copy"] = copy
    if letter and letter.lower() in ("bis", "ter"):
        out["copy"] = letter.lower()
    elif letter:
        out["sub_drawing"] = letter
    if len(number) < 4:
        warnings.append(f"short uid {number!r}")
    for token in others:
        if _SUB_RE.fullmatch(token):
            if out["sub_drawing"] is not None and out["sub_drawing"] != token:
                if letter and out["sub_drawing"] == letter:
                    out["sub_drawing"] = token
                    continue
                warnings.append(f"second sub-drawing field {token!r} ignored")
                continue
            out["sub_drawing"] = token
        elif token.isdigit() or (_LETTER_RE.fullmatch(token) and token.isupper()):
            warnings.append(f"unrecognised field {token!r} ignored")
        else:
            return f"cannot read {'_'.join(rest)!r} after the age group"
    return out


def _cut(token: str, at_case: bool) -> list[str]:
    """`token` cut at digit boundaries (`0012verso` -> `0012`, `verso`) and, with `at_case`, at
    case boundaries too (`scanBack` -> `scan`, `Back`; `VERSOScan` -> `VERSO`, `Scan`)."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(token)):
        before, here, after = token[i - 1], token[i], token[i + 1 : i + 2]
        case = (before.islower() and here.isupper()) or (
            before.isupper() and here.isupper() and after.islower()
        )
        if before.isdigit() != here.isdigit() or (at_case and case):
            parts.append(token[start:i])
            start = i
    parts.append(token[start:])
    return parts


def _as_read(text: str) -> str:
    """`text` in compatibility form (`ＶＥＲＳＯ` -> `VERSO`) without invisible format characters
    (a zero-width space inside a word): how a reader sees it."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def verso_words(text: str, country_code: str | None = None) -> list[str]:
    """The words of `VERSO_WORDS` that `text` holds as tokens: split on anything but letters and
    digits (after NFKC, without invisible format characters), each token read whole, cut at digit
    boundaries, and cut at digit and case boundaries, compared casefolded. A `vo`/`vso` that is the
    `country_code` of a name following the convention is that code, not a side."""
    found: list[str] = []
    country = (country_code or "").casefold()
    for token in _TOKEN_SEP_RE.split(_as_read(text)):
        if not token:
            continue
        whole = token.casefold()
        if whole == country and whole in _VERSO_ABBREVIATIONS:
            country = ""  # the country field, once
            continue
        parts = _cut(token, at_case=False) + _cut(token, at_case=True)
        words = {whole, *(p.casefold() for p in parts)}
        found += sorted(words & VERSO_WORDS)
    return found


def is_verso_name(name: str) -> bool:
    """Whether a file name (or stem) states a verso, whether or not the rest of the name parses.

    Recognised, in any case: the IMAJ side field `V` or `R-V` in any spelling (`_V_`, `_v_`,
    `a-V`, `-V`, `RV`, `R_V`, `r-v`, a `V` between any separators such as `scan.V.jpg`; a
    recto-verso scan shows the back too), and any of the words `verso`, `versos`, `rectoverso`,
    `vso`, `vo`, `back`, `backs`, `backside`, `reverse`, `reverso`, `dorso`, `rückseite`,
    `rueckseite` (`VERSO_WORDS`) as a token of the name: tokens are split on anything but letters
    and digits (`_`, `-`, space, `.`, ...) and again at case and digit boundaries (`scanBack`,
    `0012verso`). Not a verso: those letters inside a longer word (`backpack`, `Vosges`,
    `reverie`), a folder name (only the base name is read), and a `vo`/`vso` in the country
    field of a name that follows the convention."""
    if not isinstance(name, str):
        return False
    base = clean_stem(os.path.basename(name.replace("\\", "/")))
    text = clean_stem(os.path.splitext(base)[0]) if os.path.splitext(base)[1] else base
    parsed = parse_imaj_name(text)
    if parsed.verso:
        return True
    tokens = [t for t in re.split(r"[\s_]+", text) + _TOKEN_SEP_RE.split(_as_read(base)) if t]
    if any((found := _side_of(t)) is not None and found[0] in VERSO_SIDES for t in tokens):
        return True
    return bool(verso_words(base, parsed.country_code if parsed.parsed else None))


def _read_csv_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    text = storage.read_bytes(path).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = []
    for raw in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in raw.items() if k})
    return header, rows


class CountryNormaliser:
    """Collection country codes -> ISO 3166 alpha-3.

    Lookup order: `extra_aliases`, then the user's alias CSV (`collection_code, iso3166_alpha3
    [, country]`; an empty iso column means "no ISO code": the code stays unknown), then pycountry's
    alpha-3 codes. Anything else is None and counted in `unknown`.
    """

    def __init__(
        self, aliases_csv: str | Path | None = None, extra_aliases: Mapping[str, str] | None = None
    ) -> None:
        self.aliases: dict[str, str | None] = {}
        if aliases_csv is not None:
            header, rows = _read_csv_rows(aliases_csv)
            needed = {"collection_code", "iso3166_alpha3"}
            if not needed <= set(header):
                raise ValueError(
                    f"{aliases_csv}: a country alias table needs columns "
                    f"collection_code, iso3166_alpha3 (optional country); got {header}"
                )
            for i, row in enumerate(rows, start=2):
                code, iso = row.get("collection_code", ""), row.get("iso3166_alpha3", "").upper()
                if not code:
                    continue
                if iso and not re.fullmatch(r"[A-Z]{3}", iso):
                    raise ValueError(f"{aliases_csv}:{i}: {iso!r} is not an ISO 3166 alpha-3 code")
                previous = self.aliases.get(code)
                if code in self.aliases and previous != (iso or None):
                    raise ValueError(f"{aliases_csv}:{i}: code {code!r} is mapped twice")
                self.aliases[code] = iso or None
        for code, iso in (extra_aliases or {}).items():
            self.aliases[code] = iso.upper() if iso else None
        self.unknown: Counter[str] = Counter()

    def iso3(self, code: str | None) -> str | None:
        if code is None:
            return None
        code = code.strip()
        if not code:
            return None
        if code in self.aliases:
            found = self.aliases[code]
        else:
            found = _pycountry_alpha3(code)
        if found is None:
            self.unknown[code] += 1
        return found


def _pycountry_alpha3(code: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z]{3}", code):
        return None
    import pycountry

    country = pycountry.countries.get(alpha_3=code.upper())
    return str(country.alpha_3) if country is not None else None


# columns an overrides CSV may correct, with their value checks: the catalogue's drawing and
# artwork metadata, but not whether the name parsed
OVERRIDE_COLUMNS = (
    *(c for c in DRAWING_COLUMNS if c != "name_parsed"),
    *ARTWORK_COLUMNS,
)


def _check_override(column: str, value: str, where: str) -> object:
    if column == "year":
        if not re.fullmatch(r"\d{4}", value):
            raise ValueError(f"{where}: year {value!r} is not a four-digit year")
        return int(value)
    if column == "age_group" and value not in AGE_GROUPS:
        raise ValueError(f"{where}: age_group {value!r} is not one of {', '.join(AGE_GROUPS)}")
    if column == "side" and value not in SIDES:
        raise ValueError(f"{where}: side {value!r} is not one of {', '.join(SIDES)}")
    if column == "country_iso3" and not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError(f"{where}: country_iso3 {value!r} is not an ISO 3166 alpha-3 code")
    return value


def read_overrides(path: str | Path) -> dict[str, dict[str, object]]:
    """Read a user's metadata corrections: CSV keyed by `file_name` (a file name or its stem).

    Other columns must be among `OVERRIDE_COLUMNS`; empty cells leave the value as parsed.
    Returns `{file_name: {column: value}}` (year as int, the rest as str).
    """
    header, rows = _read_csv_rows(path)
    if "file_name" not in header:
        raise ValueError(f"{path}: an overrides CSV needs a `file_name` column; got {header}")
    unknown = [h for h in header if h != "file_name" and h not in OVERRIDE_COLUMNS]
    if unknown:
        raise ValueError(
            f"{path}: unknown override column(s) {unknown}; allowed: {', '.join(OVERRIDE_COLUMNS)}"
        )
    out: dict[str, dict[str, object]] = {}
    for i, row in enumerate(rows, start=2):
        key = row.get("file_name", "")
        if not key:
            raise ValueError(f"{path}:{i}: empty file_name")
        if key in out:
            raise ValueError(f"{path}:{i}: file_name {key!r} appears twice")
        values = {
            col: _check_override(col, val, f"{path}:{i}")
            for col, val in row.items()
            if col != "file_name" and val != ""
        }
        out[key] = values
    return out

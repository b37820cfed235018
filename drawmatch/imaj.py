"""IMAJ file names, country codes and user overrides: pure functions, no I/O but reading CSVs.

The IMAJ convention (thesis sec. 3.2) is `YEAR_AGEGROUP_UID_COUNTRY_SIDE_QUALITY`, e.g.
`2004_14-17_1013_BLG_R_C`. Real names vary; `parse_imaj_name` reads these layouts:

- renamed scans: `YEAR_AGE_UID_COUNTRY[_SUB][_SIDE[_QUALITY]][_crop]`, UID four or more digits,
  optionally with a letter (`0433a`), COUNTRY possibly empty (`1995__0275__R_C`), SUB a lowercase
  sub-drawing letter (`..._MAR_a_V_C`);
- raw scans with a batch number and no country: `YEAR_AGE_BATCH_SCAN[_SUB][_SIDE_QUALITY]`
  (`1995_14-17_64_0072_R_C`, `1998_10-13_43_0004a_V_C`, copies `..._0002 (2)`);
- raw scans with neither batch nor country: `YEAR_AGE_SCAN[_SIDE_QUALITY]` (`2000_6-9_310045`);
- two quirks the thesis' own metadata reads: `..._0090_1_0091_2_RUS_R_C` (one scan for two numbers:
  the first is the uid) and `..._MEX_R_0004_C` (a stray number between side and quality).

The year may be `Divers` (miscellaneous: year unknown). Age groups outside the six standard ones
keep their raw value with a null normalised group. A name that does not fit these layouts is
flagged: `parsed=False`, every field null, a warning saying why; it is never guessed at.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from drawmatch import storage

AGE_GROUPS = ("3-5", "6-9", "10-13", "14-17", "18-25", "MS")
SIDES = ("R", "V", "R-V")

_YEAR_RE = re.compile(r"(?:19|20)\d\d")
_AGE_RE = re.compile(r"\d{1,2}(?:-\d{1,2})?|M-?S")
_UID_RE = re.compile(r"(\d{4,})([a-z])?")
_BATCH_RE = re.compile(r"\d{1,3}")
_SCAN_RE = re.compile(r"(\d{4,})([a-z])?(?:\s*\((\d+)\))?")
_COUNTRY_RE = re.compile(r"[A-Za-z0-9]{1,5}")
_SUB_RE = re.compile(r"[a-z]{1,2}")
_QUALITY_RE = re.compile(r"[A-Z]")
_SIDE_ALIASES = {"R": "R", "V": "V", "R-V": "R-V", "RV": "R-V"}

NOT_IMAJ = "not an IMAJ name (YEAR_AGEGROUP_UID_COUNTRY_SIDE_QUALITY)"


@dataclass(frozen=True)
class ParsedName:
    """What an IMAJ file name states. Unknown or unreadable values are None."""

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
    parsed: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _unparsed(why: str) -> ParsedName:
    return ParsedName(parsed=False, warnings=(why,))


def _is_country(token: str) -> bool:
    """A country field: a short code with a letter (`FRA`, `KAZa`, `9NA`) or the placeholder `0`."""
    return bool(_COUNTRY_RE.fullmatch(token)) and (not token.isdigit() or token == "0")


def normalise_age_group(raw: str | None) -> str | None:
    """`14-17` -> `14-17`, `M-S`/`MS` -> `MS`; anything outside the six groups -> None."""
    if raw is None:
        return None
    value = raw.strip().upper()
    if value in ("MS", "M-S"):
        return "MS"
    return value if value in AGE_GROUPS else None


def _split_side_quality(rest: list[str], warnings: list[str]) -> tuple[str | None, str | None]:
    """Remove side/quality tokens from the end of `rest` (in place); return (side, quality)."""

    def side_of(token: str, loose: bool) -> str | None:
        key = token.upper() if loose else token
        side = _SIDE_ALIASES.get(key)
        if side is not None and side != token:
            warnings.append(f"side {token!r} read as {side!r}")
        return side

    if len(rest) >= 3 and _QUALITY_RE.fullmatch(rest[-1]) and rest[-2].isdigit():
        side = _SIDE_ALIASES.get(rest[-3])
        if side is not None:
            warnings.append(f"stray field {rest[-2]!r} between side and quality ignored")
            quality = rest[-1]
            del rest[-3:]
            return side, quality
    if len(rest) >= 2 and _QUALITY_RE.fullmatch(rest[-1]):
        side = side_of(rest[-2], loose=True) if rest[-2].upper() in _SIDE_ALIASES else None
        if side is not None:
            quality = rest[-1]
            del rest[-2:]
            return side, quality
    if rest and rest[-1] in _SIDE_ALIASES:
        side = side_of(rest[-1], loose=False)
        del rest[-1]
        warnings.append("no quality field")
        return side, None
    if rest and rest[-1] == "C":
        del rest[-1]
        warnings.append("no side field")
        return None, "C"
    return None, None


def parse_imaj_name(stem: str) -> ParsedName:
    """Parse a file stem (no extension) following the IMAJ naming convention; never raises."""
    if not isinstance(stem, str):
        return _unparsed(NOT_IMAJ)
    warnings: list[str] = []
    text = unicodedata.normalize("NFC", stem)
    if text != text.strip():
        warnings.append("stray whitespace around the name")
        text = text.strip()
    tokens = text.split("_")
    if any(t != t.strip() for t in tokens):
        warnings.append("stray whitespace inside a field")
        tokens = [t.strip() for t in tokens]
    if len(tokens) < 3:
        return _unparsed(NOT_IMAJ)

    # year
    year: int | None
    if _YEAR_RE.fullmatch(tokens[0]):
        year = int(tokens[0])
    elif tokens[0].lower() == "divers":
        year = None
        warnings.append(f"year {tokens[0]!r} is not a year")
    else:
        return _unparsed(NOT_IMAJ)

    # age group
    age_raw: str | None
    if tokens[1] == "":
        age_raw = None
        warnings.append("no age group")
    elif _AGE_RE.fullmatch(tokens[1]):
        age_raw = tokens[1]
    else:
        return _unparsed(NOT_IMAJ)
    age_group = normalise_age_group(age_raw)
    if age_raw is not None and age_group is None:
        warnings.append(f"non-standard age group {age_raw!r}")
    if age_raw == "M-S":
        warnings.append("age group 'M-S' read as 'MS'")

    rest = tokens[2:]
    crop = False
    if rest and rest[-1].lower() == "crop":
        crop = True
        rest = rest[:-1]
    side, quality = _split_side_quality(rest, warnings)

    scan_uid: str | None = None
    country: str | None = None
    sub: str | None = None
    batch: str | None = None
    copy: str | None = None
    attached: str | None = None

    m_uid = _UID_RE.fullmatch(rest[0]) if rest else None
    m_scan2 = _SCAN_RE.fullmatch(rest[1]) if len(rest) >= 2 else None
    if (
        len(rest) == 5
        and m_uid
        and rest[1] == "1"
        and _UID_RE.fullmatch(rest[2])
        and rest[3] == "2"
        and _is_country(rest[4])
    ):
        # `0090_1_0091_2_RUS`: one scan named by two numbers; the first is the uid
        scan_uid, attached = m_uid.group(0), m_uid.group(2)
        country = rest[4]
        warnings.append(f"name joins scan numbers {rest[0]!r} and {rest[2]!r}; uid is the first")
    elif len(rest) in (2, 3) and m_uid and (rest[1] == "" or _is_country(rest[1])):
        # renamed scan: UID_COUNTRY[_SUB]
        if len(rest) == 3 and not _SUB_RE.fullmatch(rest[2]):
            return _unparsed(f"{NOT_IMAJ}: unrecognised field {rest[2]!r}")
        scan_uid, attached = m_uid.group(0), m_uid.group(2)
        if rest[1] == "":
            warnings.append("no country")
        else:
            country = rest[1]
        if len(rest) == 3:
            sub = rest[2]
    elif len(rest) in (2, 3) and _BATCH_RE.fullmatch(rest[0]) and m_scan2:
        # raw scan: BATCH_SCAN[_SUB], no country
        if len(rest) == 3 and not _SUB_RE.fullmatch(rest[2]):
            return _unparsed(f"{NOT_IMAJ}: unrecognised field {rest[2]!r}")
        batch = rest[0]
        scan_uid, attached, copy = m_scan2.group(1, 2, 3)
        if attached:
            scan_uid += attached
        if len(rest) == 3:
            sub = rest[2]
        warnings.append("no country field")
    elif len(rest) == 1 and _SCAN_RE.fullmatch(rest[0]):
        m = _SCAN_RE.fullmatch(rest[0])
        assert m is not None
        scan_uid, attached, copy = m.group(1, 2, 3)
        if attached:
            scan_uid += attached
        warnings.append("no country field")
    else:
        shown = "_".join(rest) if rest else "nothing"
        return _unparsed(f"{NOT_IMAJ}: cannot read {shown!r} after the age group")

    if copy is not None:
        warnings.append(f"copy marker ({copy})")
    if sub is None and attached:
        sub = attached
    if side is None and quality is None:
        warnings.append("no side or quality field")
    return ParsedName(
        year=year,
        age_group_raw=age_raw,
        age_group=age_group,
        scan_uid=scan_uid,
        country_code=country,
        side=side,
        quality=quality,
        sub_drawing=sub,
        batch=batch,
        copy=copy,
        crop=crop,
        parsed=True,
        warnings=tuple(warnings),
    )


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


# columns an overrides CSV may correct, with their value checks
OVERRIDE_COLUMNS = (
    "year",
    "age_group_raw",
    "age_group",
    "country_code",
    "country_iso3",
    "side",
    "quality",
    "scan_uid",
    "sub_drawing",
    "artist",
    "title",
    "source",
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

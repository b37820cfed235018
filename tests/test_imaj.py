"""IMAJ file-name parsing, country normalisation and overrides (pure functions, no Ray)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest

from drawmatch.imaj import (
    AGE_GROUPS,
    CountryNormaliser,
    ParsedName,
    normalise_age_group,
    parse_imaj_name,
    read_overrides,
)

NULL_FIELDS = (
    "year",
    "age_group_raw",
    "age_group",
    "scan_uid",
    "country_code",
    "side",
    "quality",
    "sub_drawing",
)


def assert_unparsed(p: ParsedName) -> None:
    assert p.parsed is False
    assert all(getattr(p, f) is None for f in NULL_FIELDS), p
    assert p.warnings, "an unparsed name must say why"


# --- the parser, name by name (expected values read off the names by hand) -----------------


def test_standard_name():
    p = parse_imaj_name("2004_14-17_1013_BLG_R_C")
    assert p == ParsedName(
        year=2004,
        age_group_raw="14-17",
        age_group="14-17",
        scan_uid="1013",
        country_code="BLG",
        side="R",
        quality="C",
        parsed=True,
    )
    assert p.warnings == ()


# (stem, expected fields); every value here was read off the name by hand
SPOT_CHECKS = [
    # no country, batch number 64
    (
        "1995_14-17_64_0072_R_C",
        dict(
            year=1995,
            age_group="14-17",
            scan_uid="0072",
            batch="64",
            country_code=None,
            side="R",
            quality="C",
        ),
    ),
    # sub-drawing letter as its own field, verso
    (
        "1997_10-13_0945_MAR_a_V_C",
        dict(
            year=1997,
            age_group="10-13",
            scan_uid="0945",
            country_code="MAR",
            sub_drawing="a",
            side="V",
            quality="C",
        ),
    ),
    # sub-drawing letter glued to the scan number (kept in the uid, as the thesis' ids do)
    (
        "1998_10-13_43_0004a_V_C",
        dict(
            year=1998,
            age_group="10-13",
            scan_uid="0004a",
            sub_drawing="a",
            batch="43",
            country_code=None,
            side="V",
        ),
    ),
    (
        "2019_18-25_1824_COL_a_R_C_crop",
        dict(
            year=2019,
            age_group="18-25",
            scan_uid="1824",
            country_code="COL",
            sub_drawing="a",
            side="R",
            quality="C",
            crop=True,
        ),
    ),
    ("1999_6-9_47_0011_R-V_C", dict(age_group="6-9", scan_uid="0011", side="R-V", batch="47")),
    # age groups outside the six: raw kept, normalised null
    ("2001_8-80_0609_KIZ_R_C", dict(age_group_raw="8-80", age_group=None, country_code="KIZ")),
    ("1998_3-6_0257_MAR_R_C", dict(age_group_raw="3-6", age_group=None, scan_uid="0257")),
    ("2000_M-S_124_0068_R_C", dict(age_group_raw="M-S", age_group="MS", scan_uid="0068")),
    # empty age and country fields
    (
        "1995__0275__R_C",
        dict(
            year=1995,
            age_group_raw=None,
            age_group=None,
            scan_uid="0275",
            country_code=None,
            side="R",
            quality="C",
        ),
    ),
    # the year `Divers` (miscellaneous): unknown year
    (
        "Divers_3-25_0_10030",
        dict(
            year=None,
            age_group_raw="3-25",
            age_group=None,
            scan_uid="10030",
            batch="0",
            side=None,
            quality=None,
        ),
    ),
    # stray space before the extension (the stem keeps it)
    ("1998_18-25_3_0035 ", dict(year=1998, age_group="18-25", scan_uid="0035", batch="3")),
    # stray space inside the side field
    ("1997_10-13_0945_MAR_a_ V_C", dict(side="V", sub_drawing="a", country_code="MAR")),
    ("2000_14-17_0553_TRQ_RV_C", dict(side="R-V", country_code="TRQ")),
    ("2003_10-13_0662_ROU_V", dict(side="V", quality=None, country_code="ROU")),
    ("1998_6-9_0996_RUS_C", dict(side=None, quality="C", country_code="RUS")),
    ("2000_14-17_71_0002(2)_V_C", dict(scan_uid="0002", batch="71", copy="2", side="V")),
    ("2000_14-17_176_0089 (2)", dict(scan_uid="0089", batch="176", copy="2", side=None)),
    ("2000_6-9_310045", dict(scan_uid="310045", batch=None, country_code=None, side=None)),
    # quirks the thesis' own metadata reads this way (see drawings_sample.csv)
    ("1996_14-17_0090_1_0091_2_RUS_R_C", dict(scan_uid="0090", country_code="RUS", side="R")),
    ("1998_14-17_0253_MEX_R_0004_C", dict(scan_uid="0253", country_code="MEX", side="R")),
    ("2001_14-17_0178_FRA_ad_R_C", dict(scan_uid="0178", sub_drawing="ad", side="R")),
]


@pytest.mark.parametrize("stem,expected", SPOT_CHECKS, ids=[s for s, _ in SPOT_CHECKS])
def test_tricky_names(stem, expected):
    p = parse_imaj_name(stem)
    assert p.parsed is True, p.warnings
    got = {k: getattr(p, k) for k in expected}
    assert got == expected


def test_deviations_are_warned_about():
    assert any("8-80" in w for w in parse_imaj_name("2001_8-80_0609_KIZ_R_C").warnings)
    assert any("Divers" in w for w in parse_imaj_name("Divers_3-25_0_10030").warnings)
    assert any("country" in w for w in parse_imaj_name("1995_14-17_64_0072_R_C").warnings)
    assert any("whitespace" in w for w in parse_imaj_name("1998_18-25_3_0035 ").warnings)


@pytest.mark.parametrize(
    "stem",
    [
        "2000_18-25_0054_UKR_b_B_C",  # side `B`: not a side we know; could be a verso
        "1996_10-13_21_0016_Z_V_C",  # unknown field `Z`
        "2000_14-17_1336_TCH_a-V_C",  # `a-V`: neither a sub-drawing nor a side
        "tux_cartoon_apple",  # another collection
        "Albrecht_Du╠êrer_1",
        "2004",
        "",
        "2004_14-17",
        "2004_abc_1013_FRA_R_C",
        "2004_14-17_1013_FRA_R_C_extra_junk",
    ],
)
def test_unparseable_names_are_flagged_not_guessed(stem):
    assert_unparsed(parse_imaj_name(stem))


def test_normalise_age_group():
    assert [normalise_age_group(a) for a in AGE_GROUPS] == list(AGE_GROUPS)
    assert normalise_age_group("M-S") == "MS"
    assert normalise_age_group("3-6") is None
    assert normalise_age_group("0-0") is None
    assert normalise_age_group(None) is None


# --- every real name --------------------------------------------------------------------------


def _raw_stems(imaj_dir: Path) -> list[str]:
    text = (imaj_dir / "raw_filename_variants.txt").read_text(encoding="utf-8")
    return [os.path.splitext(line)[0] for line in text.splitlines() if line.strip()]


def test_every_real_name_parses_or_is_flagged(imaj_dir):
    stems = _raw_stems(imaj_dir)
    assert len(stems) == 2625
    unparsed = []
    for stem in stems:
        p = parse_imaj_name(stem)  # must not raise
        if not p.parsed:
            assert_unparsed(p)
            unparsed.append(stem)
            continue
        assert p.year is None or 1980 <= p.year <= 2030
        assert p.age_group is None or p.age_group in AGE_GROUPS
        assert p.side in ("R", "V", "R-V", None)
        assert p.scan_uid is not None and p.scan_uid[:4].isdigit()
        # a name ending in _V_C / _R_C / _R-V_C states its side
        m = re.search(r"_(R|V|R-V)_C(_crop)?$", stem.strip())
        if m:
            assert p.side == m.group(1), stem
    # the names that fit no layout, found by reading the file
    assert sorted(unparsed) == sorted(
        [
            "1996_10-13_21_0016_Z",
            "1996_10-13_21_0016_Z_V_C",
            "1996_10-13_21_0017_Z",
            "1996_10-13_21_0017_Z_V_C",
            "2000_14-17_1336_TCH_a-V_C",
            "2000_18-25_0054_UKR_b_B_C",
        ]
    )


def test_raw_and_renamed_names_agree(imaj_dir):
    """A scan appears once as it arrived (`..._0072`) and once renamed (`..._0072_R_C`)."""
    stems = set(_raw_stems(imaj_dir))
    pairs = 0
    for stem in stems:
        for side in ("R", "V"):
            renamed = f"{stem}_{side}_C"
            if renamed in stems:
                a, b = parse_imaj_name(stem), parse_imaj_name(renamed)
                if not a.parsed:
                    continue
                pairs += 1
                assert (a.year, a.age_group_raw, a.scan_uid, a.batch) == (
                    b.year,
                    b.age_group_raw,
                    b.scan_uid,
                    b.batch,
                )
                assert a.side is None and b.side == side
    assert pairs > 1000


# --- the thesis' own metadata -----------------------------------------------------------------

# Two codes the thesis' clean-up mapped outside its published alias table.
THESIS_EXTRA_ALIASES = {"IRA": "IRN", "MAL": "MLI"}


def test_drawings_sample_matches_thesis_metadata(imaj_dir):
    normaliser = CountryNormaliser(
        str(imaj_dir / "country_code_aliases.csv"), extra_aliases=THESIS_EXTRA_ALIASES
    )
    without_iso = set((imaj_dir / "country_codes_without_iso.txt").read_text().split())
    with open(imaj_dir / "drawings_sample.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300
    for row in rows:
        p = parse_imaj_name(row["uid"])
        assert p.parsed, row["uid"]
        assert p.year == int(row["year"]), row["uid"]
        assert p.age_group == row["age_group"], row["uid"]
        # the thesis' id column carries the extension for raw batch names (`0013.jpg`)
        assert p.scan_uid == row["id"].removesuffix(".jpg"), row["uid"]
        iso = normaliser.iso3(p.country_code)
        if row["country"] == "Not Added":  # the thesis' marker of an unknown country
            assert iso is None, row["uid"]
        elif iso is not None:
            assert iso == row["country"], row["uid"]
        else:  # kept as it is: no ISO code exists
            assert p.country_code == row["country"], row["uid"]
            assert p.country_code in without_iso, row["uid"]


def test_thesis_extra_codes_are_flagged_without_extra_aliases(imaj_dir):
    normaliser = CountryNormaliser(str(imaj_dir / "country_code_aliases.csv"))
    assert normaliser.iso3("IRA") is None
    assert normaliser.iso3("MAL") is None
    assert normaliser.unknown == {"IRA": 1, "MAL": 1}


# --- country normaliser -----------------------------------------------------------------------


def test_country_aliases_from_the_real_table(imaj_dir):
    normaliser = CountryNormaliser(str(imaj_dir / "country_code_aliases.csv"))
    assert normaliser.iso3("ALL") == "DEU"
    assert normaliser.iso3("PAY") == "NLD"
    assert normaliser.iso3("RNS") == "RUS"
    assert normaliser.iso3("KAZa") == "KAZ"
    assert normaliser.iso3("UK") == "GBR"
    assert normaliser.iso3("FRA") == "FRA"  # through pycountry
    for code in (imaj_dir / "country_codes_without_iso.txt").read_text().split():
        assert normaliser.iso3(code) is None, code
    assert normaliser.unknown["YUG"] == 1


def test_country_normaliser_order_and_unknowns(tmp_path):
    table = tmp_path / "aliases.csv"
    table.write_text("collection_code,iso3166_alpha3,country\nFRA,DEU,made up\nXYZ,,none\n")
    normaliser = CountryNormaliser(str(table))
    assert normaliser.iso3("FRA") == "DEU"  # the user's table wins over pycountry
    assert normaliser.iso3("XYZ") is None  # explicitly without an ISO code
    assert normaliser.iso3("ITA") == "ITA"
    assert normaliser.iso3("ita") == "ITA"
    assert normaliser.iso3("QQQ") is None
    assert normaliser.iso3(None) is None
    assert normaliser.iso3("") is None
    assert normaliser.unknown == {"XYZ": 1, "QQQ": 1}
    assert CountryNormaliser(None).iso3("ESP") == "ESP"


def test_country_alias_table_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("code,iso\nALL,DEU\n")
    with pytest.raises(ValueError, match="collection_code"):
        CountryNormaliser(str(bad))
    bad.write_text("collection_code,iso3166_alpha3\nALL,Germany\n")
    with pytest.raises(ValueError, match="alpha-3"):
        CountryNormaliser(str(bad))
    bad.write_text("collection_code,iso3166_alpha3\nALL,DEU\nALL,AUT\n")
    with pytest.raises(ValueError, match="twice"):
        CountryNormaliser(str(bad))


# --- overrides --------------------------------------------------------------------------------


def test_read_overrides(tmp_path):
    path = tmp_path / "overrides.csv"
    path.write_text(
        "file_name,year,age_group,country_iso3,side\n"
        "2000_18-25_0054_UKR_b_B_C.jpg,2000,18-25,UKR,V\n"
        "Divers_3-25_0_10030,,,FRA,\n"
    )
    got = read_overrides(str(path))
    assert got == {
        "2000_18-25_0054_UKR_b_B_C.jpg": {
            "year": 2000,
            "age_group": "18-25",
            "country_iso3": "UKR",
            "side": "V",
        },
        "Divers_3-25_0_10030": {"country_iso3": "FRA"},
    }


@pytest.mark.parametrize(
    "text,match",
    [
        ("file_name,colour\na.jpg,red\n", "colour"),
        ("name,year\na.jpg,2000\n", "file_name"),
        ("file_name,year\na.jpg,20x0\n", "year"),
        ("file_name,side\na.jpg,B\n", "side"),
        ("file_name,age_group\na.jpg,3-6\n", "age_group"),
        ("file_name,year\na.jpg,2000\na.jpg,2001\n", "twice"),
    ],
)
def test_bad_overrides_are_clear_errors(tmp_path, text, match):
    path = tmp_path / "overrides.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_overrides(str(path))

"""IMAJ file-name parsing, country normalisation and overrides (pure functions, no Ray)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest

from drawmatch.data.imaj import (
    AGE_GROUPS,
    CountryNormaliser,
    ParsedName,
    is_verso_name,
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
    """Nothing read from the middle of the name; a reason given. Year, age group and side may
    still be known (they sit at fixed places)."""
    assert p.parsed is False
    assert all(getattr(p, f) is None for f in ("scan_uid", "country_code", "sub_drawing")), p
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
        "tux_cartoon_apple",  # another collection
        "Albrecht_Du╠êrer_1",
        "2004",
        "",
        "2004_14-17",
        "2004_abc_1013_FRA_R_C",
        "2004_14-17_1013_FRA_R_C_extra_junk",
        "2004_14-17_1013_FRA_painting_R_C",
    ],
)
def test_unparseable_names_are_flagged_not_guessed(stem):
    p = parse_imaj_name(stem)
    assert_unparsed(p)
    assert p.style is None and p.parent_stem is None


def test_unparsed_names_keep_what_sits_at_fixed_places():
    p = parse_imaj_name("2004_abc_1013_FRA_R_C")
    assert (p.parsed, p.year, p.age_group_raw, p.side) == (False, 2004, None, "R")
    p = parse_imaj_name("2004_14-17_1013_FRA_V_C_extra_junk")
    assert (p.parsed, p.year, p.age_group, p.side) == (False, 2004, "14-17", "V")
    p = parse_imaj_name("scan_of_the_back_V")  # not IMAJ at all, still states a verso
    assert (p.parsed, p.year, p.side) == (False, None, "V")
    assert parse_imaj_name("tux_cartoon_apple").side is None


def test_normalise_age_group():
    assert [normalise_age_group(a) for a in AGE_GROUPS] == list(AGE_GROUPS)
    assert normalise_age_group("M-S") == "MS"
    assert normalise_age_group("3-6") is None
    assert normalise_age_group("0-0") is None
    assert normalise_age_group(None) is None
    # ranges inside one group take that group; ranges across groups have none
    assert normalise_age_group("14-16") == "14-17"
    assert normalise_age_group("18-21") == "18-25"
    assert normalise_age_group("3") == "3-5"
    assert normalise_age_group("10-10") == "10-13"
    assert normalise_age_group("17-25") is None
    assert normalise_age_group("14-18") is None
    assert normalise_age_group("17-14") is None
    assert normalise_age_group("ms") == "MS"


# --- the real naming zoo (patterns seen in the full collection; values read off the names) ---

BLG = dict(year=2004, age_group="14-17", scan_uid="1013", country_code="BLG", side="R", quality="C")

ZOO = [
    # the collection's own styled copies: parent stem + style suffix
    (
        "2004_14-17_1013_BLG_R_C_gray",
        dict(BLG, style="gray", parent_stem="2004_14-17_1013_BLG_R_C"),
    ),
    ("2004_14-17_1013_BLG_R_C_oil", dict(BLG, style="oil", parent_stem="2004_14-17_1013_BLG_R_C")),
    (
        "2004_14-17_1013_BLG_R_C_pencil_gray",
        dict(BLG, style="pencil", parent_stem="2004_14-17_1013_BLG_R_C"),
    ),
    (
        "2004_14-17_1013_BLG_R_C_texture",
        dict(BLG, style="texture", parent_stem="2004_14-17_1013_BLG_R_C"),
    ),
    (
        "2004_14-17_1013_BLG_R_C_water",
        dict(BLG, style="watercolor", parent_stem="2004_14-17_1013_BLG_R_C"),
    ),
    (
        "2019_18-25_1824_COL_a_R_C_crop_Water",
        dict(
            year=2019,
            age_group="18-25",
            scan_uid="1824",
            sub_drawing="a",
            crop=True,
            style="watercolor",
            parent_stem="2019_18-25_1824_COL_a_R_C_crop",
        ),
    ),
    ("1995_14-17_64_0072_R_C_oil", dict(batch="64", scan_uid="0072", side="R", style="oil")),
    # uids with a capital or trailing letter
    ("2010_14-17_0007B_FRA_R_C", dict(scan_uid="0007B", sub_drawing="B", country_code="FRA")),
    # a sub-drawing letter is not a country
    (
        "2010_14-17_0230a_a_R_C",
        dict(year=2010, scan_uid="0230a", country_code=None, sub_drawing="a", side="R"),
    ),
    # a number where the side should be
    ("2011_14-17_0312_KAZ_01_C", dict(scan_uid="0312", country_code="KAZ", side=None, quality="C")),
    # sub-drawing letters before the side, stray fields between side and quality
    (
        "2012_10-13_0456_BEL_a_R_A_C",
        dict(
            year=2012,
            age_group="10-13",
            scan_uid="0456",
            country_code="BEL",
            sub_drawing="a",
            side="R",
            quality="C",
        ),
    ),
    (
        "2012_10-13_0457_BEL_R_0001_A_C",
        dict(scan_uid="0457", country_code="BEL", side="R", quality="C"),
    ),
    # 2-3 digit uids
    ("2005_6-9_123_ITA_R_C", dict(year=2005, age_group="6-9", scan_uid="123", country_code="ITA")),
    ("2005_6-9_45_ITA_V_C", dict(scan_uid="45", country_code="ITA", side="V")),
    # bis
    ("2006_14-17_0099bis_POL_R_C", dict(scan_uid="0099bis", copy="bis", country_code="POL")),
    ("2006_14-17_0099_POL_bis_R_C", dict(scan_uid="0099", copy="bis", side="R", quality="C")),
    # doubled extensions (the stem keeps one), doubled underscores
    ("2007_18-25_0321_MEX_R_C.jpg", dict(year=2007, scan_uid="0321", country_code="MEX", side="R")),
    ("2007_18-25_0321_MEX_R_C.JPG.jpg", dict(scan_uid="0321", side="R", quality="C")),
    ("2007_18-25__0321_MEX_R_C", dict(age_group="18-25", scan_uid="0321", country_code="MEX")),
    ("2007__18-25_0321_MEX_R_C", dict(age_group="18-25", scan_uid="0321", country_code="MEX")),
    ("2007_18-25_0321__MEX_R__C", dict(scan_uid="0321", country_code="MEX", side="R", quality="C")),
    # crops
    ("2008_14-17_0777_GRE_R_C_crop1", dict(scan_uid="0777", side="R", quality="C", crop=True)),
    # non-standard age ranges: raw kept, group where the range lies inside one
    ("2002_14-16_0181_SRI_R_C", dict(age_group_raw="14-16", age_group="14-17")),
    ("2001_17-25_0431_THA_R_C", dict(age_group_raw="17-25", age_group=None)),
    ("2003_18-21_0001_FRA_R_C", dict(age_group_raw="18-21", age_group="18-25")),
    ("1996_3_0138_HON_R_C", dict(age_group_raw="3", age_group="3-5")),
    # names that used to fit no layout
    (
        "2000_18-25_0054_UKR_b_B_C",
        dict(scan_uid="0054", country_code="UKR", sub_drawing="b", side=None, quality="C"),
    ),
    ("1996_10-13_21_0016_Z_V_C", dict(batch="21", scan_uid="0016", side="V", quality="C")),
    (
        "2000_14-17_1336_TCH_a-V_C",
        dict(scan_uid="1336", country_code="TCH", sub_drawing="a", side="V", quality="C"),
    ),
    # quality letters: C (consultation) and A (archive)
    ("2004_14-17_1013_BLG_R_A", dict(side="R", quality="A")),
]


@pytest.mark.parametrize("stem,expected", ZOO, ids=[s for s, _ in ZOO])
def test_the_real_naming_zoo(stem, expected):
    p = parse_imaj_name(stem)
    assert p.parsed is True, p.warnings
    got = {k: getattr(p, k) for k in expected}
    assert got == expected


def test_zoo_deviations_are_flagged_with_reasons():
    def said(stem, *words):
        notes = " | ".join(parse_imaj_name(stem).warnings)
        return all(w in notes for w in words), notes

    assert said("2004_14-17_1013_BLG_R_C_pencil_gray", "styled copy", "pencil")[0]
    assert said("2011_14-17_0312_KAZ_01_C", "'01'", "side")[0]
    assert said("2012_10-13_0457_BEL_R_0001_A_C", "0001_A")[0]
    assert said("2001_17-25_0431_THA_R_C", "17-25")[0]
    assert said("2002_14-16_0181_SRI_R_C", "14-16", "14-17")[0]
    assert said("2007_18-25_0321_MEX_R_C.jpg", "extension")[0]
    assert said("2000_18-25_0054_UKR_b_B_C", "unknown side 'B'")[0]
    assert said("1996_10-13_21_0016_Z_V_C", "'Z'")[0]
    assert said("2005_6-9_123_ITA_R_C", "short uid")[0]
    assert parse_imaj_name("2004_14-17_1013_BLG_R_C").warnings == ()
    assert parse_imaj_name("2004_14-17_1013_BLG_R_A").warnings == ()  # A is a known quality


def test_implausible_values_are_flagged_not_silently_accepted():
    for stem, year in (("1985_14-17_0001_FRA_R_C", 1985), ("2045_14-17_0001_FRA_R_C", 2045)):
        p = parse_imaj_name(stem)
        assert p.year == year and any("implausible year" in w for w in p.warnings), p
    p = parse_imaj_name("2004_14-17_1013_BLG_R_X")
    assert p.quality == "X" and any("unknown quality letter 'X'" in w for w in p.warnings)
    assert not any("implausible" in w for w in parse_imaj_name("1990_3-5_0001_FRA_R_C").warnings)
    assert not any("implausible" in w for w in parse_imaj_name("2030_3-5_0001_FRA_R_C").warnings)


# --- versos by name (privacy) ----------------------------------------------------------------

# every verso spelling: (stem, side it states)
VERSO_SPELLINGS = [
    ("2004_14-17_1013_BLG_V_C", "V"),
    ("2004_14-17_1013_BLG_v_C", "V"),
    ("2004_14-17_1013_BLG_v_c", "V"),
    ("2004_14-17_1013_BLG_V", "V"),
    ("2004_14-17_1013_BLG_a-V_C", "V"),
    ("2004_14-17_1013_BLG-V_C", "V"),
    ("2004_14-17_1013_BLG_-V_C", "V"),
    ("2004_14-17_1013_BLG_R-V_C", "R-V"),
    ("2004_14-17_1013_BLG_RV_C", "R-V"),
    ("2004_14-17_1013_BLG_r-v_C", "R-V"),
    ("2004_14-17_1013_BLG_R_V_C", "R-V"),
    ("2004_14-17_1013_BLG_ V _C", "V"),
    ("1998_10-13_43_0004a_V_C", "V"),
    ("2004_14-17_1013_BLG_V_0001_A_C", "V"),
    ("2004_14-17_1013_BLG_V_C_crop1", "V"),
    ("2004_14-17_1013_BLG_V_C_gray", "V"),
    ("2004_14-17_1013_BLG_V_C.jpg", "V"),
    ("2004__1013__V_C", "V"),
    # the rest of the name does not parse: the side is still read
    ("2004_14-17_1013_BLG_painting_V_C", "V"),
    ("2004_abc_1013_BLG_V_C", "V"),
    ("Divers_junk_V", "V"),
    ("scan_V", "V"),
]


@pytest.mark.parametrize("stem,side", VERSO_SPELLINGS, ids=[s for s, _ in VERSO_SPELLINGS])
def test_every_verso_spelling_states_a_verso(stem, side):
    p = parse_imaj_name(stem)
    assert p.side == side and p.verso, p
    assert is_verso_name(stem)
    assert is_verso_name(stem + ".jpg") and is_verso_name(f"/some/dir/{stem}.png")


@pytest.mark.parametrize(
    "name",
    [
        "2004_14-17_1013_BLG_R_C",
        "2004_14-17_1013_BLG_R_C.jpg",
        "2004_14-17_1013_BLG_R_C_gray",
        "2000_6-9_310045",
        "2000_M-S_124_0068_R_C",
        "Vincent_van_Gogh_368.jpg",
        "draw3.jpg",
        "/data/V/2004_14-17_1013_BLG_R_C.jpg",  # a folder named V says nothing
    ],
)
def test_rectos_are_not_versos(name):
    assert not is_verso_name(name)


# --- every real name --------------------------------------------------------------------------


def _raw_stems(imaj_dir: Path) -> list[str]:
    text = (imaj_dir / "raw_filename_variants.txt").read_text(encoding="utf-8")
    return [os.path.splitext(line)[0] for line in text.splitlines() if line.strip()]


# a verso in any spelling, written independently of the parser: a field `V`/`v`, `R-V`, `RV`,
# or something glued to `-V`
_VERSO_FIELD = re.compile(r"(?:^|_)\s*(?:[A-Za-z0-9]*-[Vv]|[Rr]-?[Vv]|[Vv])\s*(?:_|$)")


def _sample_stems(imaj_dir: Path) -> list[str]:
    with open(imaj_dir / "drawings_sample.csv", newline="", encoding="utf-8") as fh:
        return [row["uid"] for row in csv.DictReader(fh)]


def test_every_real_name_parses_or_is_flagged(imaj_dir):
    stems = _raw_stems(imaj_dir)
    assert len(stems) == 2625
    for stem in stems + _sample_stems(imaj_dir):
        p = parse_imaj_name(stem)  # must not raise
        assert p.parsed, (stem, p.warnings)  # every real name fits a layout now
        assert p.year is None or 1980 <= p.year <= 2030
        assert p.age_group is None or p.age_group in AGE_GROUPS
        assert p.side in ("R", "V", "R-V", None)
        assert p.quality in ("C", None), stem  # only consultation scans among these names
        assert p.scan_uid is not None and p.scan_uid[:4].isdigit()
        # a name ending in _V_C / _R_C / _R-V_C states its side
        m = re.search(r"_(R|V|R-V)_C(_crop)?$", stem.strip())
        if m:
            assert p.side == m.group(1), stem
        # every verso spelling gives side V or R-V, and a verso
        if _VERSO_FIELD.search(stem):
            assert p.side in ("V", "R-V") and p.verso and is_verso_name(stem), stem
        else:
            assert not p.verso and not is_verso_name(stem), stem
        # every deviation comes with a reason
        assert all(isinstance(w, str) and len(w) > 8 for w in p.warnings), stem
        if stem.strip() == stem and re.fullmatch(
            r"(?:19|20)\d\d_(?:3-5|6-9|10-13|14-17|18-25|MS)_\d{4}_[A-Z]{3}_[RV]_C", stem
        ):
            assert p.warnings == (), stem


def test_real_name_coverage(imaj_dir):
    """Year and age group read from at least 99.5 % of the real unstyled names; the rest state
    none (an empty age field, the year `Divers`), never lost by the parser."""
    stems = [s for s in _raw_stems(imaj_dir) + _sample_stems(imaj_dir)]
    parsed = [parse_imaj_name(s) for s in stems]
    originals = [(s, p) for s, p in zip(stems, parsed, strict=True) if p.style is None]
    assert len(originals) == len(stems) == 2925
    missing = [s for s, p in originals if p.year is None or p.age_group_raw is None]
    assert len(missing) / len(originals) <= 0.005, missing
    for stem in missing:  # each states no year or no age group
        fields = stem.split("_")
        assert fields[0] == "Divers" or fields[1] == "", stem
    # a normalised group wherever the raw range lies inside one of the six
    for stem, p in originals:
        if p.age_group_raw in ("16-17", "18-24", "7-8", "6-8", "10-12", "18-19", "6-6", "3"):
            assert p.age_group is not None, stem
        if p.age_group_raw in ("3-25", "10-14", "17-24", "3-6", "0-0", "8-80"):
            assert p.age_group is None and any(p.age_group_raw in w for w in p.warnings), stem


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

# Codes the thesis' clean-up kept as they are but the alias table now maps (its last rows).
MAPPED_SINCE = {"TOG": "TGO"}


def test_drawings_sample_matches_thesis_metadata(imaj_dir):
    normaliser = CountryNormaliser(str(imaj_dir / "country_code_aliases.csv"))
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
        elif p.country_code in MAPPED_SINCE:
            assert row["country"] == p.country_code and iso == MAPPED_SINCE[p.country_code]
        elif iso is not None:
            assert iso == row["country"], row["uid"]
        else:  # kept as it is: no ISO code exists
            assert p.country_code == row["country"], row["uid"]
            assert p.country_code in without_iso, row["uid"]


def test_codes_added_to_the_alias_table_later(imaj_dir):
    normaliser = CountryNormaliser(str(imaj_dir / "country_code_aliases.csv"))
    assert normaliser.iso3("IRA") == "IRN"
    assert normaliser.iso3("MAL") == "MLI"
    assert normaliser.iso3("TOG") == "TGO"
    assert normaliser.unknown == {}


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
        assert normaliser.iso3(code) == MAPPED_SINCE.get(code), code
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

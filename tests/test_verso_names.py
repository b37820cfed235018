"""Versos by name, beyond the IMAJ convention: every documented spelling is a verso, ordinary
names are not (property-based, over random case, separators and surrounding tokens)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drawmatch.data.imaj import is_verso_name, parse_imaj_name
from tests.verso_strategies import extensions, ordinary_stems, verso_stems

folders = st.sampled_from(("", "scans/", "/data/V/", "drawings/2004/"))


def _abbreviation_as_country(stem: str) -> bool:
    """A name following the IMAJ convention whose country field is `vo`/`vso`: the country."""
    parsed = parse_imaj_name(stem)
    return parsed.parsed and (parsed.country_code or "").casefold() in ("vo", "vso")


@settings(max_examples=400, deadline=None)
@given(stem=verso_stems(), ext=extensions, folder=folders)
def test_every_spelling_of_a_verso_is_a_verso(stem: str, ext: str, folder: str) -> None:
    if _abbreviation_as_country(stem):
        return
    assert is_verso_name(stem), stem
    assert is_verso_name(stem + ext), stem
    assert is_verso_name(folder + stem + ext), stem


@settings(max_examples=400, deadline=None)
@given(stem=ordinary_stems(), ext=extensions, folder=folders)
def test_ordinary_names_are_not_versos(stem: str, ext: str, folder: str) -> None:
    assert not is_verso_name(stem + ext), stem
    assert not is_verso_name(folder + stem + ext), stem


@pytest.mark.parametrize(
    "name",
    [
        "Verso.jpg",
        "verso",
        "back_verso.jpg",
        "Back.png",
        "IMG_0001 - BACK.jpg",
        "drawing-reverse.jpg",
        "scanBack.jpg",
        "VERSOScan.jpg",
        "0012verso.jpg",
        "verso2.jpg",
        "p12_vo.jpg",
        "page 3 vso.tif",
        "Zeichnung_Rückseite.jpg",
        "dibujo_reverso.jpg",
        "disegno-dorso.jpg",
        "scan.V.jpg",
        "recto_verso.jpg",
        "RectoVerso.jpg",
        "2004_14-17_1013_BLG_verso_C.jpg",
        "2004_14-17_1013_BLG_R_C_back.jpg",  # a word states a verso whatever the side field
        "2004_14-17_1013_BLG_vo_C.jpg",  # an abbreviation in the side field
        "\uff36\uff25\uff32\uff33\uff2f.jpg",  # full-width letters
        "ver\u200bso.jpg",  # a zero-width space inside the word
        "scan_v\u00b0.jpg",  # v° (verso, abbreviated)
    ],
)
def test_named_versos(name: str) -> None:
    assert is_verso_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "backpack.jpg",
        "Vosges_1.jpg",
        "reverie.png",
        "drawing_rev2.jpg",  # a revision, not a reverse
        "dos_gatos.jpg",
        "retro_car.jpg",
        "Volvo_vote.jpg",
        "feedback.jpg",
        "2004_14-17_1013_VO_R_C.jpg",  # `VO` in the country field is a country code
        "2004_14-17_1013_BLG_recto_C.jpg",
        "/data/back/2004_14-17_1013_BLG_R_C.jpg",  # only the base name is read
    ],
)
def test_named_rectos(name: str) -> None:
    assert not is_verso_name(name)


def test_side_words_in_the_side_field() -> None:
    assert parse_imaj_name("2004_14-17_1013_BLG_Verso_C").side == "V"
    assert parse_imaj_name("2004_14-17_1013_BLG_recto_C").side == "R"
    assert parse_imaj_name("2004_14-17_1013_BLG_recto-verso_C").side == "R-V"
    assert parse_imaj_name("back_verso").verso

"""Hypothesis strategies for file names that state a verso and for ordinary names that do not,
written from the documented vocabulary (docs/design.md), not from the parser."""

from __future__ import annotations

from hypothesis import strategies as st

# the words the design notes list as versos, anywhere in a name, in any case
VERSO_WORDS = (
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
)
# the IMAJ side field of a verso or recto-verso scan, between separators
VERSO_SIDE_FIELDS = ("V", "R-V", "RV", "R_V")
# ordinary tokens, some close to a verso word (`backpack`, `Vosges`, `reverie`, `rev`)
ORDINARY = (
    "backpack",
    "backyard",
    "feedback",
    "Vosges",
    "Volvo",
    "vote",
    "vortex",
    "reverie",
    "reversal",
    "revolution",
    "rev",
    "dos",
    "retro",
    "versatile",
    "universo",
    "drawing",
    "scan",
    "IMG",
    "Monet",
    "Vincent",
    "van",
    "Gogh",
    "BLG",
    "FRA",
    "R",
    "C",
    "crop",
)
SEPARATORS = ("_", "-", " ", ".", "__", " - ", "-_")
EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".png", ".PNG")

separators = st.sampled_from(SEPARATORS)
digits = st.from_regex(r"[0-9]{1,5}", fullmatch=True)


@st.composite
def any_case(draw: st.DrawFn, word: str) -> str:
    """`word` with each letter in a random case."""
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if up else c.lower() for c, up in zip(word, flips, strict=True))


@st.composite
def ordinary_token(draw: st.DrawFn) -> str:
    """A token of an ordinary name: a listed word in lower, upper or title case, or digits."""
    if draw(st.booleans()):
        return draw(digits)
    word = draw(st.sampled_from(ORDINARY))
    return str(draw(st.sampled_from((word.lower(), word.upper(), word.title(), word))))


def _join(draw: st.DrawFn, tokens: list[str]) -> str:
    text = tokens[0]
    for token in tokens[1:]:
        text += draw(separators) + token
    return text


@st.composite
def verso_token(draw: st.DrawFn) -> str:
    """A verso word in any case, alone or glued to digits or, camel-case, to a lower word; or an
    IMAJ verso side field in any case."""
    if draw(st.integers(0, 4)) == 0:
        return str(draw(any_case(draw(st.sampled_from(VERSO_SIDE_FIELDS)))))
    word = draw(st.sampled_from(VERSO_WORDS))
    glue = draw(st.sampled_from(("none", "digits before", "digits after", "camel")))
    if glue == "digits before":
        return draw(digits) + draw(any_case(word))
    if glue == "digits after":
        return draw(any_case(word)) + draw(digits)
    if glue == "camel":
        return draw(st.sampled_from(("scan", "img", "drawing"))) + word.title()
    return str(draw(any_case(word)))


@st.composite
def verso_stems(draw: st.DrawFn) -> str:
    """A stem holding one verso token between zero to three ordinary tokens on each side."""
    before = draw(st.lists(ordinary_token(), max_size=3))
    after = draw(st.lists(ordinary_token(), max_size=3))
    return _join(draw, [*before, draw(verso_token()), *after])


@st.composite
def ordinary_stems(draw: st.DrawFn) -> str:
    """A stem of one to five ordinary tokens: no verso in any spelling."""
    return _join(draw, draw(st.lists(ordinary_token(), min_size=1, max_size=5)))


extensions = st.sampled_from(EXTENSIONS)

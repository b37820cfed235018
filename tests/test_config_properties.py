"""Every config key of every job refuses what lies outside its declaration, as a class.

The keys, their types, ranges and choices are walked here from the config dataclasses of
`drawmatch.cli.JOBS` (nested sections included), independently of the checks under test. For
each key, values at and beyond its bounds, non-finite and huge numbers, wrong types, empty
lists and texts are given on the command line: each must cost one line on stderr naming the
key, exit code 2, no Ray and nothing written. Values at an inclusive bound must be accepted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drawmatch.cli import JOBS, main
from drawmatch.core.config import ConfigError, load_config
from tests.conftest import ray_never_started


@dataclasses.dataclass(frozen=True)
class Key:
    """One leaf key of a job's config, as its dataclass declares it."""

    job: str
    name: str  # dotted
    kind: type  # int, float, bool, str or dict (of str); the item type of a list
    optional: bool
    is_list: bool
    meta: typing.Mapping[str, Any]

    def bound(self, which: str) -> float | None:
        """The declared `ge`, `gt`, `le` or `lt` (None: not declared)."""
        value: float | None = self.meta.get(which)
        return value


def _unwrap(hint: Any) -> tuple[Any, bool, bool]:
    """(type, optional, is a list) of a field's annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) in (tuple, list):
        return typing.get_args(hint)[0], optional, True
    if typing.get_origin(hint) is dict:
        return dict, optional, False
    return hint, optional, False


def _leaves(job: str, cls: type, prefix: str = "") -> Iterator[Key]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(job, hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        kind, optional, is_list = _unwrap(hint)
        yield Key(job, f"{prefix}{f.name}", kind, optional, is_list, f.metadata)


KEYS = [
    key
    for job in sorted(JOBS)
    for key in _leaves(job, JOBS[job].config_class())
    if key.name != "out"  # the output root the test gives
]


BOUNDS = ("ge", "gt", "le", "lt")


def _outside(key: Key, value: float) -> bool:
    """Whether `value` lies outside the range `key` declares (or is not finite)."""
    if not math.isfinite(value):
        return True
    ge, gt, le, lt = (key.bound(w) for w in BOUNDS)
    return (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
        or (lt is not None and value >= lt)
    )


def _number_text(key: Key, value: float) -> str:
    return str(int(value)) if key.kind is int and float(value).is_integer() else repr(value)


def _beyond_bounds(key: Key) -> list[str]:
    """Numbers at an exclusive bound, one (or a tiny step) past each bound, 0 and -1 when out of
    range, and what no number key takes: infinities, NaN, 1e308, 10**30."""
    numbers: list[float] = [0, -1]
    for which, outward in (("ge", -1), ("gt", -1), ("le", 1), ("lt", 1)):
        bound = key.bound(which)
        if bound is not None:
            numbers += [bound, bound + outward, math.nextafter(bound, outward * math.inf)]
    texts = [_number_text(key, v) for v in numbers if _outside(key, v)]
    texts += [".inf", "-.inf", ".nan", "inf", "nan", "1e308", "-1.0e+308", str(10**30)]
    texts += [str(-(10**30)), "9" * 400]
    if key.kind is int:
        texts += ["1.5", "1e3", "1.0e+3", "true"]
    return texts


def bad_texts(key: Key) -> list[str]:
    """Override values `key` must refuse (the value after `key=`)."""
    if key.kind in (int, float):
        texts = _beyond_bounds(key) + ["abc", "[]" if not key.is_list else "3", "{a: 1}"]
    elif key.kind is bool:
        texts = ["1", "0", "maybe", "{a: 1}", "[true]" if not key.is_list else "true"]
    elif key.kind is dict:
        texts = ["[a]", "3", "abc"]
    else:
        texts = ["''", "' '", "{a: b}", "[a]" if not key.is_list else "3"]
        texts += ["zz-not-a-choice"] if key.meta.get("choices") else []
    if key.is_list:
        texts = [t if t in ("3", "true") else f"[{t}]" for t in texts] + ["[null]", "[[1]]"]
        texts += [] if key.meta.get("may_be_empty") else ["[]"]
    if not key.optional:
        texts += ["", "null"]
    return texts


def _job_started(config: Any) -> None:
    raise AssertionError(f"the job started with {config!r}")


@pytest.fixture(scope="module", autouse=True)
def jobs_never_run() -> Iterator[None]:
    """A value the checks let through fails here instead of running its job."""
    import importlib

    with pytest.MonkeyPatch.context() as patch:
        for spec in JOBS.values():
            patch.setattr(importlib.import_module(spec.module), "run", _job_started)
        yield


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root with a catalogue and embeddings: only the bad value can be wrong."""
    from drawmatch.data.catalogue import catalogue_path

    out = tmp_path_factory.mktemp("out")
    Path(catalogue_path(out)).write_text("")
    (out / "embeddings" / "m").mkdir(parents=True)
    (out / "embeddings" / "m" / "model.json").write_text("{}")
    return out


def _listing(out: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(out)), p.stat().st_size) for p in out.rglob("*"))


def assert_refused(job: str, override: str, key: str, out: Path) -> None:
    """`drawmatch <job> out=<out> <override>`: exit 2, one stderr line naming `key`, no Ray,
    nothing written."""
    before = _listing(out)
    target = f"out={out / 'x.jpg'}" if JOBS[job].out_is_file else f"out={out}"
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std), ray_never_started():
        code = main([job, target, override])
    lines = err.getvalue().splitlines()
    assert code == 2, (job, override, err.getvalue())
    assert len(lines) == 1 and "config error" in lines[0] and key in lines[0], (override, lines)
    assert _listing(out) == before


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_key_refuses_values_beyond_its_declaration(job: str, out_root: Path) -> None:
    keys = [k for k in KEYS if k.job == job]
    assert keys
    for key in keys:
        for text in bad_texts(key):
            assert_refused(job, f"{key.name}={text}", key.name, out_root)
        if key.kind is dict:
            for override in (f"{key.name}.x=", f"{key.name}.=x", f"{key.name}.x=[1]"):
                assert_refused(job, override, key.name, out_root)
            assert_refused(job, f"{key.name}.x={{a: b}}", key.name, out_root)


def _numeric(key: Key) -> bool:
    return key.kind in (int, float) and any(key.bound(w) is not None for w in BOUNDS)


def _ints_beyond(key: Key) -> list[st.SearchStrategy[float]]:
    """Whole numbers past each declared bound, and huge ones of either sign."""
    ge, gt, le, lt = (key.bound(w) for w in BOUNDS)
    sides = [st.integers(max_value=math.ceil(ge) - 1)] if ge is not None else []
    sides += [st.integers(max_value=math.floor(gt))] if gt is not None else []
    sides += [st.integers(min_value=math.floor(le) + 1)] if le is not None else []
    sides += [st.integers(min_value=math.ceil(lt))] if lt is not None else []
    return sides


def _floats_beyond(key: Key) -> list[st.SearchStrategy[float]]:
    """Floats past each declared bound (the bound itself where it is exclusive), and NaN."""
    ge, gt, le, lt = (key.bound(w) for w in BOUNDS)
    sides = [st.just(math.nan)]
    sides += [st.floats(max_value=ge, exclude_max=True)] if ge is not None else []
    sides += [st.floats(max_value=gt)] if gt is not None else []
    sides += [st.floats(min_value=le, exclude_min=True)] if le is not None else []
    sides += [st.floats(min_value=lt)] if lt is not None else []
    return sides


@st.composite
def _far_beyond(draw: st.DrawFn) -> tuple[Key, str]:
    """A number key and a number drawn anywhere outside its declared range."""
    key = draw(st.sampled_from([k for k in KEYS if k.kind in (int, float)]))
    sides = _ints_beyond(key) if key.kind is int else _floats_beyond(key)
    beyond = st.one_of(*sides).filter(lambda v: _outside(key, v))  # -0.0 is not below 0
    huge = st.integers(min_value=10**12) | st.integers(max_value=-(10**12))  # no key takes it
    value = draw(beyond | huge if key.kind is int else beyond)
    text = repr(value)
    return key, f"[{text}]" if key.is_list else text


@settings(max_examples=300, deadline=None)
@given(_far_beyond())
def test_any_number_outside_a_declared_range_is_refused(
    out_root: Path, case: tuple[Key, str]
) -> None:
    key, text = case
    assert_refused(key.job, f"{key.name}={text}", key.name, out_root)


def _rest_of_one(*others: str) -> Callable[[float], list[str]]:
    """Split fractions: the first other key takes what is left of 1, the second 0."""
    return lambda v: [f"{others[0]}={1 - v}", f"{others[1]}=0"]


TRAINING_JOBS = ("train", "verify", "classify")
STAGES = ("pseudo", "pairs")  # the retrain's training stages
# keys whose bound conflicts with another key's default (a rule across keys): the values of the
# other keys that make the bound legal
COMPANIONS: dict[tuple[str, str], Callable[[float], list[str]]] = {
    ("train", "epochs"): lambda v: ["pseudo_epochs=1"],
    ("sweep", "base.epochs"): lambda v: ["base.pseudo_epochs=1"],
    **{(job, "train_resize"): lambda v: ["train_crop=32"] for job in TRAINING_JOBS},
    ("sweep", "base.train_resize"): lambda v: ["base.train_crop=32"],
    **{(job, "train_crop"): lambda v: ["train_resize=4096"] for job in TRAINING_JOBS},
    ("sweep", "base.train_crop"): lambda v: ["base.train_resize=4096"],
    ("classify", "val"): lambda v: ["test=0"],
    ("classify", "test"): lambda v: ["val=0"],
    ("serve", "thumb_size"): lambda v: ["view_size=4096"],
    ("serve", "view_size"): lambda v: ["thumb_size=32"],
    ("split", "train"): _rest_of_one("val", "test"),
    ("split", "val"): _rest_of_one("train", "test"),
    ("split", "test"): _rest_of_one("train", "val"),
    **{("retrain", f"{s}.train_resize"): lambda v, s=s: [f"{s}.train_crop=32"] for s in STAGES},
    **{("retrain", f"{s}.train_crop"): lambda v, s=s: [f"{s}.train_resize=4096"] for s in STAGES},
}
# bounds no other value makes legal: a sweep's ASHA grace period (>= 1) needs base.epochs >= 1;
# a retrain's first stage trains on pseudo-pairs and its second on the pairs, and it sets its
# stages' and its embed step's model and Ray itself (from its own `model` and `ray`)
REFUSED_AT_BOUND = {
    ("sweep", "base.epochs", "0"),
    ("retrain", "pseudo.pseudo_epochs", "0"),
    ("retrain", "pairs.epochs", "0"),
    *[("retrain", f"{s}.model.image_size", v) for s in (*STAGES, "embed") for v in ("32", "4096")],
    *[("retrain", f"{s}.ray.num_cpus", "1") for s in (*STAGES, "embed")],
}


def _at_bounds(key: Key) -> list[str]:
    """The in-range values at each declared bound (a tiny step inside an exclusive one)."""
    values: list[float] = []
    for which, inward in (("ge", 0), ("gt", 1), ("le", 0), ("lt", -1)):
        bound = key.bound(which)
        if bound is None:
            continue
        if inward and key.kind is float:
            values.append(math.nextafter(bound, inward * math.inf))
        else:
            values.append(bound + inward)
    return [
        _number_text(key, v) if not key.is_list else f"[{_number_text(key, v)}]" for v in values
    ]


@pytest.mark.parametrize("key", [k for k in KEYS if _numeric(k)], ids=lambda k: f"{k.job}-{k.name}")
def test_values_at_a_declared_bound_are_accepted(key: Key) -> None:
    cls = JOBS[key.job].config_class()
    companions = COMPANIONS.get((key.job, key.name), lambda v: [])
    for text in _at_bounds(key):
        extra = companions(float(text.strip("[]")))
        if (key.job, key.name, text) in REFUSED_AT_BOUND:
            with pytest.raises(ConfigError, match=key.name):
                load_config(cls, None, [f"{key.name}={text}", *extra])
            continue
        config = load_config(cls, None, [f"{key.name}={text}", *extra])
        value = config
        for part in key.name.split("."):
            value = getattr(value, part)
        assert value == (float(text.strip("[]")) if not key.is_list else (float(text.strip("[]")),))

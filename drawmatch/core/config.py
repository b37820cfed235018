"""Config declarations and loading, the same for every job and component.

A config is a frozen dataclass deriving from `Config`; each key is declared once with `setting()`:
its default, range, choices and help together (`lr: float = setting(1e-4, gt=0, le=1, help=...)`).
`Config.__post_init__` checks every key against its declaration, then the class's `check()` for
rules across keys. A config is built from the defaults, a YAML file and `key=value` overrides
(`embed.batch_size=8` style dotted keys); unknown keys, values of the wrong type and values out
of range are `ConfigError`s raised before any work starts. Each run saves its resolved config as
YAML next to its outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")

MIN_IMAGE_SIZE = 32  # smaller inputs vanish in the backbones' five stride-2 stages
MAX_IMAGE_SIZE = 4096  # a larger side's tensors and buffers outgrow any machine's memory
# the largest whole number a key takes, whatever its declared range: counts, sizes and seeds
# reach C ints (FAISS, OpenCV, numpy), where a larger one overflows or is refused mid-run
MAX_INT = 2**31 - 1


class ConfigError(ValueError):
    """A config file or override names an unknown key, or gives a value of the wrong type or out
    of its range."""


# ---------------------------------------------------------------------------------------------
# declaring keys


def setting(
    default: Any = MISSING,
    *,
    help: str,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] = (),
    may_be_empty: bool = False,
) -> Any:
    """One config key: its default (or `factory` for a mutable one), its range (`ge`/`gt` below,
    `le`/`lt` above), the values it allows (`choices`) and its `help` line for `--help`. A list
    key applies these to each item and needs at least one unless `may_be_empty`. Every number
    must be finite and every text non-empty; None (for an optional key) means "not set"."""
    metadata = {
        "help": help,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": tuple(choices),
        "may_be_empty": may_be_empty,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, help: str = "") -> Any:
    """A nested config section of class `cls` (its docstring is its help)."""
    return field(default_factory=cls, metadata={"help": help})


def redeclare(base: type, name: str, default: Any, **changes: Any) -> Any:
    """Key `name` of config class `base` with another default (and the declaration `changes`,
    e.g. `ge=1`): otherwise the same range, choices and help (a subclass's shared key)."""
    declared = {f.name: f for f in dataclasses.fields(base)}[name]
    return field(default=default, metadata={**declared.metadata, **changes})


def range_of(cls: type, name: str) -> dict[str, Any]:
    """The range and choices declared for key `name` of config class `cls`, to declare a key
    that takes the same values (`setting(..., **range_of(TrainConfig, "lr"), help=...)`)."""
    declared = {f.name: f for f in dataclasses.fields(cls)}[name].metadata
    return {k: declared[k] for k in ("ge", "gt", "le", "lt", "choices")}


def bound_text(value: float) -> str:
    """A bound as people read it: whole numbers in full (1048576), others short (1e-06, 0.5)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def range_text(meta: typing.Mapping[str, Any]) -> str:
    """`1 to 100`, `>= 1`, `> 0 and <= 1`: the range a key declares."""
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    if ge is not None and le is not None:
        return f"{bound_text(ge)} to {bound_text(le)}"
    parts = [f">= {bound_text(ge)}" if ge is not None else ""]
    parts += [f"> {bound_text(gt)}" if gt is not None else ""]
    parts += [f"<= {bound_text(le)}" if le is not None else ""]
    parts += [f"< {bound_text(lt)}" if lt is not None else ""]
    return " and ".join(p for p in parts if p)


def _in_range(value: float, meta: typing.Mapping[str, Any]) -> bool:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    return (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )


def _short(value: Any) -> str:
    """`value` as it is shown in an error, cut to 40 characters (a number of 1000 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_item(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """One value (or list item) against its declaration; None passes."""
    if value is None:
        return
    allowed = meta.get("choices", ())
    if allowed and value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{name}: an empty value is not allowed (leave the key out instead)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, int) and abs(value) > MAX_INT:  # before isfinite: it overflows
        raise ConfigError(f"{name}: {_short(value)} is out of range (at most {MAX_INT} in size)")
    if not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} is not a finite number")
    if not _in_range(value, meta):
        raise ConfigError(f"{name}: {value!r} is out of range (must be {range_text(meta)})")


def check_keys(config: Any) -> None:
    """Every key of `config` against its declaration (nested sections check themselves)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (tuple, list)):
            if not value and not f.metadata.get("may_be_empty", False):
                raise ConfigError(f"{f.name}: give at least one value")
            for i, item in enumerate(value):
                _check_item(f"{f.name}[{i}]", item, f.metadata)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not str(key).strip():
                    raise ConfigError(f"{f.name}: an empty key is not allowed ({f.name}.KEY=VALUE)")
                _check_item(f"{f.name}.{key}", item, f.metadata)
        elif not dataclasses.is_dataclass(value):
            _check_item(f.name, value, f.metadata)


class Config:
    """Base of every config dataclass: its keys are checked against their declarations when it
    is made, then `check()` applies the class's rules across keys."""

    def __post_init__(self) -> None:
        check_keys(self)
        self.check()

    def check(self) -> None:
        """Rules across keys (raise ConfigError); none unless a class adds them."""


def at_least(name: str, value: float | None, minimum: float) -> None:
    """`value >= minimum` for a rule across keys (None means "not set" and passes)."""
    if value is not None and not value >= minimum:  # `not >=` also refuses NaN
        raise ConfigError(f"{name}: {value!r} is out of range (must be >= {bound_text(minimum)})")


def folder_name(name: str, value: str | None) -> None:
    """A name that becomes one folder under `out` (a run or sweep name): not a path."""
    if value is not None and ("/" in value or "\\" in value or value.strip() in (".", "..")):
        raise ConfigError(f"{name}: {value!r} must be a plain name, not a path")


# ---------------------------------------------------------------------------------------------
# building a config from plain values


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, item_tp = typing.get_args(tp) or (Any, Any)
        return {
            _check_value(k, key_tp, where): _check_value(v, item_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {_short(value)} is out of range (too large)") from None
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (cached: classes do not change)."""
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """A `cls` config from a plain mapping (nested mappings for sections); raises ConfigError."""
    hints = type_hints(cls)  # type: ignore[arg-type]
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    not_names = [k for k in data if not isinstance(k, str)]  # `1: x` in a YAML file
    if not_names:
        raise ConfigError(f"{prefix}{_short(not_names[0])}: a config key must be a name")
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_value(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a range check of a nested section: name its full key
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples become lists), for YAML and Ray boundaries."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=x"]` -> `{"a": {"b": 3}, "c": "x"}`; values are parsed as YAML scalars."""
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        name, raw = item.split("=", 1)
        name = name.strip()
        if not name or not all(part.strip() for part in name.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        _set_dotted(data, name, _parse_value(name, raw))
    return data


def _parse_value(name: str, raw: str) -> Any:
    """The value of override `name=raw` as a YAML scalar, list or mapping ("" is None)."""
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{name}: {raw!r} is not a valid value ({problem})") from None
    except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
        raise ConfigError(
            f"{name}: {_short(raw)} is not a valid value (too long or deep)"
        ) from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file (a local path or a URI), or a one-line ConfigError."""
    from drawmatch.core import storage

    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc})") from None
    try:
        loaded = yaml.safe_load(text)
    except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
        raise ConfigError(f"--config {path}: not a valid config (a value too long)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--config {path}: not valid YAML{at}: {problem}") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: a config file must be a mapping of keys to values")
    return loaded


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Build a `cls` config from defaults, an optional `base` dict, a YAML file and overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, _read_yaml(path))
    data = _merge(data, parse_overrides(list(overrides or [])))
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (a local path or a URI)."""
    from drawmatch.core import storage

    storage.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))

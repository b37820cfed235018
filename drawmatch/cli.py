"""The `drawmatch` command: one subcommand per job, each `--config FILE` plus `key=value` overrides.

`jobs/<job>.py` calls `run_job` too, so `drawmatch embed ...` and `python jobs/embed.py ...` (what
`ray job submit` runs) are the same code path.

Everything a command line says is checked before the job starts (before Ray, before anything is
written): keys, types and ranges (declared with the job's config, `drawmatch.core.config`), then
the paths it names (`preflight`). A mistake costs one line on stderr: exit code 2 for a config
error, 1 for anything else.

Each job is registered once, in `JOBS`: adding a job adds one `Job` entry there.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from drawmatch.core.config import ConfigError, load_config, range_text
from drawmatch.core.images import ImageError

# what a job raises for a bad input, a missing file or a refused value: one line, exit code 1
EXPECTED_ERRORS = (OSError, ValueError, ImageError)


def _never(_config: Any) -> str | None:
    return None


def _always(_config: Any) -> bool:
    return True


def _no_rule(_config: Any) -> None:
    return None


@dataclass(frozen=True)
class Job:
    """One `drawmatch` job. `module` holds `run(config)` and the config class `config`; the
    rest is what the command line offers and what `preflight` checks before the job starts."""

    module: str
    config: str
    help: str
    # convenience flags -> the override they stand for; switches -> the boolean key they set
    flags: dict[str, str] = field(default_factory=dict)
    switches: dict[str, str] = field(default_factory=dict)
    # dotted keys naming inputs that must exist when given: "file" or "dir"
    inputs: dict[str, str] = field(default_factory=dict)
    # dotted keys naming a file the job writes: must not be an existing folder
    output_files: tuple[str, ...] = ()
    # dotted keys naming backbones (one name or a list), and the pooling they are used with
    backbones: tuple[str, ...] = ()
    pooling: str | None = None
    # the job creates its output root (every other job reads one that `ingest` made); `out` is
    # one file it writes, not an output root
    creates_out: bool = False
    out_is_file: bool = False
    # the job reads `embeddings/<model_tag>/` under the output root
    needs_embeddings: bool = False
    # whether this config reads the catalogue (and embeddings) under the output root
    reads_root: Callable[[Any], bool] = _always
    # what a config lacks to run (exit code 1), or None; rules across keys (ConfigError)
    needs: Callable[[Any], str | None] = _never
    check: Callable[[Any], None] = _no_rule

    def config_class(self) -> type:
        """The job's config class (imports the job's module)."""
        cls: type = getattr(importlib.import_module(self.module), self.config)
        return cls


def _label_data_needs(config: Any) -> str | None:
    """verify and classify: labelled images, or an output root with a catalogue."""
    if config.data.images is not None:
        return None
    from drawmatch.data.catalogue import catalogue_path

    out = str(config.out)  # an `out=` naming a file is refused below, as for every job
    if _kind(out, "out") != "file" and _kind(catalogue_path(out), "out") != "file":
        return "data.images=DIR (a folder per label, or with data.labels_csv=FILE), or an out= with a catalogue"
    return None


def _evaluate_split(config: Any) -> None:
    if config.split_csv and config.split_set is None:
        raise ConfigError("split_csv needs split_set=train|val|test")
    if config.split_set is not None and not config.split_csv:
        raise ConfigError("split_set needs split_csv=FILE")


def _label_job(name: str, config: str, help_line: str) -> Job:
    """verify and classify: labelled images (or a catalogue) in, a run folder out."""
    return Job(
        f"drawmatch.jobs.{name}",
        config,
        help_line,
        inputs={"data.images": "dir", "data.labels_csv": "file", "model.weights": "file"},
        backbones=("model.backbone",),
        pooling="model.pooling",
        creates_out=True,
        needs=_label_data_needs,
    )


JOBS: dict[str, Job] = {
    "ingest": Job(
        "drawmatch.jobs.ingest",
        "IngestConfig",
        "catalogue drawings and artworks",
        inputs={
            "drawings_root": "dir",
            "artworks_root": "dir",
            "artworks_metadata_csv": "file",
            "country_aliases_csv": "file",
            "overrides_csv": "file",
        },
        creates_out=True,
        needs=lambda c: (
            "drawings_root=DIR and/or artworks_root=DIR"
            if c.drawings_root is None and c.artworks_root is None
            else None
        ),
    ),
    "augment": Job(
        "drawmatch.jobs.augment",
        "AugmentConfig",
        "write style-augmented copies",
        inputs={"pairs_csv": "file"},
        needs=lambda c: (
            "pairs_csv=FILE (or select=drawings|all)"
            if c.select == "paired" and not c.pairs_csv
            else None
        ),
    ),
    "embed": Job(
        "drawmatch.jobs.embed",
        "EmbedConfig",
        "embed catalogue images with a CNN",
        flags={"weights": "model.weights"},
        inputs={"model.weights": "file"},
        backbones=("model.backbone",),
        pooling="model.pooling",
    ),
    "index": Job(
        "drawmatch.jobs.index",
        "IndexConfig",
        "build a FAISS index of artworks",
        needs_embeddings=True,
    ),
    "regions": Job(
        "drawmatch.jobs.regions",
        "RegionsConfig",
        "region embeddings, region index and local features of artworks",
    ),
    "search": Job(
        "drawmatch.jobs.search",
        "SearchConfig",
        "top-k artworks for a drawing",
        flags={"query": "query", "k": "k"},
        output_files=("batch_output",),
        needs_embeddings=True,
        needs=lambda c: (
            "query=DRAWING_ID_OR_IMAGE (or --query) or batch=true"
            if not c.query and not c.batch
            else None
        ),
    ),
    "evaluate": Job(
        "drawmatch.jobs.evaluate",
        "EvaluateConfig",
        "retrieval metrics for pairs",
        switches={"folds": "folds"},
        inputs={"pairs_csv": "file", "split_csv": "file", "non_copies_csv": "file"},
        output_files=("output",),
        needs_embeddings=True,
        reads_root=lambda c: not c.folds,  # folds: the train runs' results only
        needs=lambda c: (
            "pairs_csv=FILE, or split_csv=FILE with split_set=train|val|test, or --folds"
            if not c.folds and not (c.pairs_csv or c.split_csv)
            else None
        ),
        check=_evaluate_split,
    ),
    "split": Job(
        "drawmatch.jobs.split",
        "SplitConfig",
        "artwork-disjoint train/val/test folds",
        inputs={"pairs_csv": "file", "negatives_csv": "file"},
        creates_out=True,  # works on a pairs file alone, without a catalogue
        needs=lambda c: None if c.pairs_csv else "pairs_csv=FILE",
    ),
    "train": Job(
        "drawmatch.jobs.train",
        "TrainConfig",
        "fine-tune a backbone on one fold (Ray Train)",
        inputs={"fold_csv": "file", "negatives_csv": "file", "model.weights": "file"},
        backbones=("model.backbone",),
        pooling="model.pooling",
        needs=lambda c: (
            None
            if c.fold_csv or not c.epochs
            else "fold_csv=FILE (make folds with `drawmatch split`; epochs=0 needs none)"
        ),
    ),
    "sweep": Job(
        "drawmatch.workflows.sweep",
        "SweepConfig",
        "two-stage Ray Tune sweep over folds",
        inputs={"base.model.weights": "file"},
        backbones=("backbones", "base.model.backbone"),
        pooling="base.model.pooling",
    ),
    "demo": Job(
        "drawmatch.workflows.demo",
        "DemoConfig",
        "run the whole pipeline on bundled data",
        inputs={"data": "dir"},
        backbones=("backbone",),
        creates_out=True,
    ),
    "retrain": Job(
        "drawmatch.workflows.retrain",
        "RetrainConfig",
        "one review round: export, split, train, embed, index, evaluate, report (resumable)",
        inputs={"pairs_csv": "file"},
        backbones=("model.backbone",),
        pooling="model.pooling",
        needs_embeddings=True,
    ),
    "report": Job("drawmatch.jobs.report", "ReportConfig", "static HTML report of the outputs"),
    "thumbnails": Job(
        "drawmatch.jobs.thumbnails",
        "ThumbnailsConfig",
        "thumbnails of every showable image (Ray Data)",
    ),
    "similar": Job("drawmatch.jobs.similar", "SimilarConfig", "drawing-to-drawing neighbours"),
    "serve": Job(
        "drawmatch.jobs.serve",
        "ServeConfig",
        "the experts' workbench (web app)",
        inputs={"pairs_csv": "file"},
    ),
    "export": Job(
        "drawmatch.jobs.export",
        "ExportConfig",
        "annotated pairs and non-matches to pairs and negatives CSVs",
        inputs={"pairs_csv": "file"},
    ),
    "verify": _label_job(
        "verify",
        "VerifyConfig",
        "artist-style verification: train on labels, label-disjoint test (Ray Train)",
    ),
    "classify": _label_job(
        "classify",
        "ClassifyConfig",
        "label classification: linear probe or fine-tuned head (Ray Train)",
    ),
    "stylize": Job(
        "drawmatch.jobs.stylize",
        "StylizeConfig",
        "render an image in the style of another (neural style transfer)",
        flags={"content": "content", "style": "style", "out": "out"},
        inputs={"content": "file", "style": "file"},
        backbones=("params.backbone",),
        creates_out=True,
        out_is_file=True,
        needs=lambda c: (
            None
            if c.content and c.style
            else "content=IMG and style=IMG (or --content IMG --style IMG)"
        ),
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a ConfigError (one line) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


# ---------------------------------------------------------------------------------------------
# help generated from the config dataclasses


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"mapping[{_type_name(key)}, {_type_name(value)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    """A default as it is written in YAML or on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int):
        return str(value)
    return str(value) if value != "" else "''"


def config_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) of every leaf key of a config dataclass, nested ones
    walked; the default also says which values a choice key allows and a ranged key's range."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from config_keys(tp, f"{prefix}{f.name}.")
            continue
        default = _show(getattr(defaults, f.name))
        if f.metadata.get("choices"):
            default += f"; one of {', '.join(map(str, f.metadata['choices']))}"
        if range_text(f.metadata):
            default += f"; {range_text(f.metadata)}"
        yield f"{prefix}{f.name}", _type_name(tp), default, f.metadata.get("help", "")


def _sections(cls: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted section, docstring) of the nested dataclasses of a config that have one."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield f"{prefix}{f.name}", _doc(tp)
            yield from _sections(tp, f"{prefix}{f.name}.")


def _doc(cls: type) -> str:
    """A dataclass's own docstring as one paragraph (not the signature dataclass() makes up)."""
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.split())


def keys_help(cls: type) -> str:
    """The config-keys part of a job's --help: every key, its type and default, then sections."""
    rows = list(config_keys(cls))
    width = max(len(k) for k, _t, _d, _h in rows) + 2
    type_width = max(len(t) for _k, t, _d, _h in rows) + 2
    lines = ["config keys (key=value on the command line, nested keys with dots, or YAML):"]
    lines += [f"  {k:<{width}}{t:<{type_width}}{h}; default: {d}" for k, t, d, h in rows]
    sections = [(name, doc) for name, doc in _sections(cls) if doc]
    if sections:
        lines.append("")
        lines.append("sections:")
        for name, doc in sections:
            lines.append(
                textwrap.fill(doc, width=96, initial_indent=f"  {name}: ", subsequent_indent="    ")
            )
    return "\n".join(lines)


def build_parser(job: str) -> argparse.ArgumentParser:
    spec = JOBS[job]
    cls = spec.config_class()
    description = spec.help
    if _doc(cls):
        description += "\n\n" + textwrap.fill(_doc(cls), width=96)
    parser = _Parser(
        prog=f"drawmatch {job}",
        description=description,
        epilog=keys_help(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (keys of the job's config)")
    for flag, key in spec.flags.items():
        parser.add_argument(f"--{flag}", help=f"same as {key}=VALUE")
    for flag, key in spec.switches.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"same as {key}=true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


# ---------------------------------------------------------------------------------------------
# parsing and checking


def parse_job_config(job: str, argv: list[str]) -> Any:
    """Parse a job's command line into its checked config (raises ConfigError)."""
    spec = JOBS[job]
    args = build_parser(job).parse_intermixed_args(argv)
    overrides = list(args.overrides)
    for flag, key in spec.flags.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    for flag, key in spec.switches.items():
        if getattr(args, flag):
            overrides.append(f"{key}=true")
    return load_config(spec.config_class(), args.config, overrides)


def _get(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _kind(path: str, key: str) -> str:
    """The kind of `path` (a local path or a URI): "file", "dir" or "missing"; a URI pyarrow
    cannot use is a ConfigError naming `key`."""
    from drawmatch.core import storage

    try:
        if storage.is_file(path):
            return "file"
        return "dir" if storage.exists(path) else "missing"
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _required(job: str, config: Any) -> None:
    """Keys a job cannot run without (ValueError), and keys that only make sense together
    (ConfigError)."""
    needs = JOBS[job].needs(config)
    if needs:  # exit code 1, as when the job itself found the key missing
        raise ValueError(f"{job} needs {needs}")
    JOBS[job].check(config)


def _check_backbones(job: str, config: Any) -> None:
    """Backbone names against the registry (imports torch: after every cheaper check)."""
    keys = JOBS[job].backbones
    if not keys:
        return
    from drawmatch.models.backbones import list_backbones

    known = list_backbones()
    for key in keys:
        value = _get(config, key)
        for name in value if isinstance(value, tuple) else (value,):
            if name not in known:
                raise ConfigError(f"{key}: unknown backbone {name!r}; known: {', '.join(known)}")
    _check_poolings(job, config, keys)


def _check_poolings(job: str, config: Any, keys: tuple[str, ...]) -> None:
    """The pooling a job's config names must suit each backbone it names (CNNs: avg, max, gem;
    vision transformers: cls, avg)."""
    from drawmatch.models.backbones import pooling_error

    pooling_key = JOBS[job].pooling
    if pooling_key is None:
        return
    pooling = _get(config, pooling_key)
    for key in keys:
        value = _get(config, key)
        for name in value if isinstance(value, tuple) else (value,):
            problem = pooling_error(name, pooling)
            if problem:
                raise ConfigError(f"{pooling_key}: {problem} ({key}={name})")


def _check_out_file(out: str, kind: str, config: Any) -> None:
    """`out` of a job that writes one image file: not a folder, a known image extension, and
    not an existing file unless `overwrite=true`."""
    if kind == "dir":
        raise ConfigError(f"out={out} is an existing folder, not a file name")
    if kind == "file" and not config.overwrite:
        raise ConfigError(f"out={out} is an existing file (overwrite=true replaces it)")
    if not out.lower().endswith((".jpg", ".jpeg", ".png")):
        raise ConfigError(f"out={out}: the file name must end in .jpg, .jpeg or .png")


def preflight(job: str, config: Any) -> None:
    """Check what a config names outside itself before the job starts: the output root, input
    files and folders, output files, backbone names. Raises ConfigError for a value that cannot
    be right, FileNotFoundError for something missing, ValueError for a required key left out."""
    spec = JOBS[job]
    _required(job, config)
    out = str(config.out)
    out_kind = _kind(out, "out")
    if spec.out_is_file:
        _check_out_file(out, out_kind, config)
    elif out_kind == "file":
        raise ConfigError(f"out={out} is an existing file, not an output folder")
    if not spec.creates_out:
        if out_kind == "missing":
            raise FileNotFoundError(
                f"no drawmatch output at {out} (run `drawmatch ingest out={out}` first)"
            )
        reads_root = spec.reads_root(config)
        from drawmatch.data.catalogue import catalogue_path

        if reads_root and _kind(catalogue_path(out), "out") != "file":
            raise FileNotFoundError(
                f"{out} holds no catalogue (run `drawmatch ingest out={out}` first)"
            )
        if spec.needs_embeddings and reads_root:
            from drawmatch.core import storage

            models = storage.list_files(storage.join(out, "embeddings"), "*/model.json", True)
            if not models:
                raise FileNotFoundError(
                    f"no embeddings under {out} (run `drawmatch embed out={out}` first)"
                )
    for key, kind in spec.inputs.items():
        value = _get(config, key)
        for item in value if isinstance(value, tuple) else (value,):  # a list key: each item
            if item is not None:
                _check_input(key, str(item), kind)
    for key in spec.output_files:
        value = _get(config, key)
        if value is not None and _kind(str(value), key) == "dir":
            raise ConfigError(f"{key}={value} is an existing folder, not a file name")
    _check_backbones(job, config)


def _check_input(key: str, value: str, kind: str) -> None:
    """An input a config names must exist and be a `kind` ("file" or "dir")."""
    found = _kind(value, key)
    if found == "missing":
        raise FileNotFoundError(f"{key}={value}: no such {'folder' if kind == 'dir' else 'file'}")
    if found != kind:
        raise ConfigError(
            f"{key}={value} is a {found}, not a {'folder' if kind == 'dir' else 'file'}"
        )


def _one_line(exc: BaseException) -> str:
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def run_job(job: str, argv: list[str] | None = None) -> int:
    """Parse, check, run and report one job; returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        config = parse_job_config(job, list(sys.argv[1:] if argv is None else argv))
        preflight(job, config)
    except ConfigError as exc:
        print(f"drawmatch {job}: config error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as exc:
        print(f"drawmatch {job}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    run: Callable[[Any], Any] = importlib.import_module(JOBS[job].module).run
    try:
        run(config)
    except EXPECTED_ERRORS as exc:
        print(f"drawmatch {job}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# `drawmatch models`: the backbone registry as a table

MODELS_HELP = "list the backbones: input size, normalisation, pooling, weights, GPU"


def models_table() -> str:
    """One row per registered backbone: name, kind, default input size, normalisation, poolings
    (the first is the default), output width, pretrained weights and where they come from,
    whether they work offline here, and whether a GPU is recommended."""
    from drawmatch.models.backbones import (
        NORMALISATIONS,
        backbone_spec,
        list_backbones,
        normalisation_name,
        weights_offline,
    )

    header = ["name", "kind", "input", "normalisation", "pooling", "dim", "weights", "offline"]
    header += ["GPU", "source"]
    rows = [header]
    for name in list_backbones():
        spec = backbone_spec(name)
        rows.append(
            [
                name,
                spec.kind,
                str(spec.input_size),
                normalisation_name(spec),
                ",".join(spec.poolings),
                str(spec.dim) if spec.dim else "-",
                spec.weights or "none",
                "yes" if weights_offline(name) else "no",
                "yes" if spec.gpu else "no",
                spec.source,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    lines = [line.rstrip() for line in lines]
    lines += [
        "",
        "input: the default model.image_size (any size works: ViTs pad to a multiple of their "
        "patch);",
        "pooling: the first is the default (ViTs: cls = class token, avg = mean of patch tokens);",
        "offline: the pretrained weights load without a network here (else they download on",
        "first use); GPU: too slow on CPUs for more than a sample (BENCHMARKS.md). Normalisations:",
    ]
    for label, (mean, std) in NORMALISATIONS.items():
        lines.append(
            f"  {label}: mean {', '.join(f'{m:.4f}' for m in mean)}, "
            f"std {', '.join(f'{v:.4f}' for v in std)}"
        )
    return "\n".join(lines)


def models_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: drawmatch models\n\n{MODELS_HELP}")
        return 0
    if argv:
        print(f"drawmatch models: takes no arguments (got {' '.join(argv)})", file=sys.stderr)
        return 2
    print(models_table())
    return 0


def usage() -> str:
    lines = ["usage: drawmatch JOB [--config FILE] [key=value ...]", "", "jobs:"]
    lines += [f"  {name:<9} {spec.help}" for name, spec in JOBS.items()]
    lines += ["", "commands:", f"  {'models':<9} {MODELS_HELP}"]
    lines += ["", "`drawmatch JOB --help` lists the job's config keys, their types and defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "models":
        return models_main(argv[1:])
    if argv[0] not in JOBS:
        print(f"drawmatch: unknown job {argv[0]!r}; jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in argv[1:]):
        build_parser(argv[0]).print_help()
        return 0
    return run_job(argv[0], argv[1:])

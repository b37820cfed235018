"""The command line refuses a bad command in one line, before Ray starts and before any write."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from drawmatch.cli import JOBS, main

PREVIOUS = "out: earlier-run\nbatch_size: 8\n"  # the resolved config an earlier run saved


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """An output root of an earlier run: a catalogue and the resolved configs it saved."""
    import pandas as pd

    out = tmp_path / "run"
    out.mkdir()
    pd.DataFrame({"id": ["a"], "collection": ["drawing"]}).to_parquet(out / "catalogue.parquet")
    for name in ("ingest_config.yaml", "augment_config.yaml", "demo_config.yaml"):
        (out / name).write_text(PREVIOUS)
    emb = out / "embeddings" / "efficientnet_lite0-avg-280-imagenet"
    emb.mkdir(parents=True)
    (emb / "embed_config.yaml").write_text(PREVIOUS)
    (emb / "model.json").write_text("{}")
    return out


@pytest.fixture(autouse=True)
def no_job_runs(monkeypatch):
    """Every test here is refused before the job's `run` (so before Ray starts): reaching a job
    module's `run` fails the test, whether or not an earlier test left Ray running."""
    import importlib
    import types

    real = importlib.import_module
    job_modules = {job.module for job in JOBS.values()}

    def guarded(name: str, *args: object) -> object:
        module = real(name, *args)  # type: ignore[arg-type]
        if name not in job_modules:
            return module

        def run(_config: object) -> None:
            raise AssertionError(f"{name}.run was reached")

        return types.SimpleNamespace(**{**vars(module), "run": run})

    monkeypatch.setattr(importlib, "import_module", guarded)


def _refused(capsys, argv: list[str], code: int, root: Path, *needles: str) -> str:
    import ray

    ray_was_up = ray.is_initialized()
    before = _snapshot(root)
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert _snapshot(root) == before  # nothing written, earlier resolved configs untouched
    assert ray.is_initialized() == ray_was_up
    return lines[0]


BAD_COMMANDS = [
    (["embed", "batch_size=0"], 2, ["batch_size: 0", ">= 1"]),
    (["embed", "batch_size=-3"], 2, ["batch_size: -3"]),
    (["embed", "rows_per_file=0"], 2, ["rows_per_file: 0"]),
    (["embed", "num_actors=0"], 2, ["num_actors: 0"]),
    (["embed", "cpus_per_actor=0"], 2, ["cpus_per_actor: 0"]),
    (["embed", "decode_cpus=-1"], 2, ["decode_cpus: -1"]),
    (["embed", "model.image_size=8"], 2, ["model.image_size: 8"]),
    (["search", "k=0", "query=a"], 2, ["k: 0"]),
    (["search", "--k", "-2", "--query", "a"], 2, ["k: -2"]),
    (["search"], 1, ["needs query="]),
    (["evaluate", "ks=[0, 5]", "pairs_csv=p.csv"], 2, ["ks[0]: 0"]),
    (["evaluate", "split_set=dev"], 2, ["split_set"]),
    (["evaluate"], 1, ["needs pairs_csv"]),
    (["augment", "jpeg_quality=0"], 2, ["jpeg_quality: 0", "1 to 100"]),
    (["augment"], 1, ["needs pairs_csv"]),
    (["train", "lr=0", "fold_csv=f.csv"], 2, ["lr: 0"]),
    (["train", "margin=-1", "fold_csv=f.csv"], 2, ["margin: -1"]),
    (["train"], 1, ["needs fold_csv"]),
    (["sweep", "base.epochs=0"], 2, ["base.epochs: 0"]),
    (["sweep", "trial_cpus=-1"], 2, ["trial_cpus: -1"]),
    (["index", "nlist=0"], 2, ["nlist: 0"]),
    (["split", "n_folds=0", "pairs_csv=p.csv"], 2, ["n_folds: 0"]),
    (["demo", "examples=0"], 2, ["examples: 0"]),
    (["ingest", "extensions=[]"], 2, ["extensions"]),
    (["ingest"], 1, ["needs drawings_root"]),
    (["stylize", "--content", "c.jpg"], 1, ["needs content=IMG and style=IMG"]),
    (["stylize", "params.steps=0"], 2, ["params.steps: 0"]),
    (["stylize", "params.optimizer=sgd"], 2, ["params.optimizer"]),
    (["stylize", "--content", "c.jpg", "--style", "s.jpg"], 2, ["existing folder"]),
    (["serve", "review.order=random"], 2, ["review.order"]),
    (["embed", "batchsize=4"], 2, ["unknown config key(s) batchsize"]),
    (["embed", "--no-such-flag"], 2, ["unrecognized arguments"]),
]


@pytest.mark.parametrize("argv, code, needles", BAD_COMMANDS)
def test_bad_values_are_one_line_and_write_nothing(capsys, earlier_run, argv, code, needles):
    _refused(capsys, [*argv, f"out={earlier_run}"], code, earlier_run.parent, *needles)


def test_missing_or_malformed_config_file(capsys, earlier_run, tmp_path):
    missing = tmp_path / "nope.yaml"
    _refused(capsys, ["embed", "--config", str(missing)], 2, tmp_path, "no such file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1,\nout: x\n")
    _refused(capsys, ["embed", "--config", str(bad)], 2, tmp_path, "not valid YAML", "line")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    _refused(capsys, ["embed", "--config", str(scalar)], 2, tmp_path, "mapping")
    ranged = tmp_path / "ranged.yaml"
    ranged.write_text(f"out: {earlier_run}\nrows_per_file: 0\n")
    _refused(capsys, ["embed", "--config", str(ranged)], 2, tmp_path, "rows_per_file: 0")


@pytest.mark.parametrize("job", sorted(JOBS))
def test_out_naming_a_file_is_refused(capsys, tmp_path, job):
    # stylize's out is the image it writes: an existing one is kept unless overwrite=true
    target = tmp_path / ("results.jpg" if job == "stylize" else "results.txt")
    target.write_text("keep me")
    extra = {
        "ingest": [f"drawings_root={tmp_path}"],
        "augment": ["select=all"],
        "search": ["batch=true"],
        "evaluate": ["--folds"],
        "split": ["pairs_csv=p.csv"],
        "train": ["fold_csv=f.csv"],
        "stylize": ["content=c.jpg", "style=s.jpg"],
    }.get(job, [])
    _refused(capsys, [job, f"out={target}", *extra], 2, tmp_path, "existing file")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("job", ["augment", "embed", "index", "search", "evaluate", "sweep"])
def test_reading_jobs_need_an_existing_output_root(capsys, tmp_path, job):
    missing = tmp_path / "typo"
    extra = {
        "augment": ["select=all"],
        "search": ["query=x"],
        "evaluate": ["pairs_csv=p.csv"],
    }.get(job, [])
    line = _refused(capsys, [job, f"out={missing}", *extra], 1, tmp_path, "no drawmatch output")
    assert str(missing) in line and "drawmatch ingest" in line
    assert not missing.exists()


def test_search_on_a_missing_root_says_so_not_zero_models(capsys, tmp_path):
    line = _refused(capsys, ["search", f"out={tmp_path / 'x'}", "--query", "d1"], 1, tmp_path)
    assert "no drawmatch output" in line and "embedding models" not in line


def test_folder_without_catalogue(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(capsys, ["embed", f"out={tmp_path / 'empty'}"], 1, tmp_path, "holds no catalogue")


def test_missing_inputs_are_refused(capsys, earlier_run, tmp_path):
    root = tmp_path
    _refused(
        capsys,
        ["ingest", f"out={root / 'new'}", f"drawings_root={root / 'nope'}"],
        1,
        root,
        "drawings_root",
        "no such folder",
    )
    assert not (root / "new").exists()
    _refused(
        capsys,
        ["train", f"out={earlier_run}", f"fold_csv={root / 'f.csv'}"],
        1,
        root,
        "fold_csv",
        "no such file",
    )
    _refused(
        capsys,
        ["evaluate", f"out={earlier_run}", f"pairs_csv={earlier_run}"],
        2,
        root,
        "pairs_csv",
        "not a file",
    )
    _refused(
        capsys,
        ["embed", f"out={earlier_run}", "--weights", str(root / "ft.pt")],
        1,
        root,
        "model.weights",
    )
    known = root / "known.csv"
    known.write_text("drawing_id,artwork_id\n")
    _refused(
        capsys,
        ["serve", f"out={earlier_run}", f"pairs_csv=[{known}, {root / 'nope.csv'}]"],
        1,
        root,
        "pairs_csv",
        "nope.csv: no such file",
    )
    _refused(
        capsys,
        ["export", f"out={earlier_run}", f"pairs_csv=[{earlier_run}]"],
        2,
        root,
        "pairs_csv",
        "not a file",
    )


def test_unknown_backbone_is_refused_before_ray(capsys, earlier_run):
    _refused(
        capsys,
        ["embed", f"out={earlier_run}", "model.backbone=vgg16"],
        2,
        earlier_run.parent,
        "model.backbone",
        "vgg16",
    )


def test_uri_output_root_is_checked_through_storage(capsys, tmp_path):
    missing = f"file://{tmp_path}/absent"
    _refused(capsys, ["index", f"out={missing}"], 1, tmp_path, "no drawmatch output")
    (tmp_path / "f").write_text("x")
    _refused(capsys, ["index", f"out=file://{tmp_path}/f"], 2, tmp_path, "existing file")


def _walk_keys(cls: type, prefix: str = "") -> list[tuple[str, object, tuple[str, ...]]]:
    """Every leaf key of a config dataclass with its default and allowed values, walked here
    independently."""
    keys = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _walk_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(
                (f"{prefix}{f.name}", getattr(instance, f.name), f.metadata.get("choices", ()))
            )
    return keys


@pytest.mark.parametrize("job", sorted(JOBS))
def test_help_lists_every_key_with_type_and_default(capsys, job):
    assert main([job, "--help"]) == 0
    text = capsys.readouterr().out
    cls = JOBS[job].config_class()
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    for key, default, allowed in _walk_keys(cls):
        assert key in lines, f"{key} missing from `drawmatch {job} --help`"
        shown = lines[key]
        for value in allowed:
            assert value in shown.split("one of", 1)[1], (key, value, shown)
        if isinstance(default, bool):
            assert f"default: {str(default).lower()}" in shown
        elif default is None:
            assert "default: null" in shown
        elif isinstance(default, (int, float, str)) and default != "":
            assert f"default: {default}" in shown
    assert " ".join(cls.__doc__.split())[:40] in " ".join(text.split())
    assert "str" in text  # every config has string keys (out=); types are shown
    if job == "index":
        assert "one of flat, ivf, hnsw" in lines["kind"]


def test_top_level_help_lists_jobs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for job in JOBS:
        assert f"  {job} " in out


@pytest.mark.parametrize("job", ["index", "search", "evaluate"])
def test_jobs_reading_embeddings_say_when_there_are_none(capsys, tmp_path, job):
    import pandas as pd

    out = tmp_path / "run"
    out.mkdir()
    pd.DataFrame({"id": ["a"]}).to_parquet(out / "catalogue.parquet")
    (tmp_path / "p.csv").write_text("drawing_id,artwork_id\n")
    extra = {"search": ["query=a"], "evaluate": [f"pairs_csv={tmp_path / 'p.csv'}"]}
    line = _refused(capsys, [job, f"out={out}", *extra.get(job, [])], 1, tmp_path)
    assert "no embeddings" in line and "drawmatch embed" in line


def test_object_store_output_root_is_checked(capsys, tmp_path, s3_server):
    """The same checks on an S3 output root (a local S3-compatible server)."""
    import boto3

    from tests.conftest import make_bucket

    bucket = make_bucket("cli-checks")
    line = _refused(capsys, ["embed", f"out={bucket}/run"], 1, tmp_path, "no drawmatch output")
    assert f"{bucket}/run" in line
    boto3.client("s3").put_object(Bucket="cli-checks", Key="run/catalogue.parquet", Body=b"x")
    _refused(capsys, ["index", f"out={bucket}/run"], 1, tmp_path, "no embeddings")
    _refused(
        capsys, ["search", f"out={bucket}/run/catalogue.parquet", "k=3", "batch=true"], 2, tmp_path
    )
    _refused(capsys, ["augment", f"out={bucket}/other", "select=all"], 1, tmp_path, "no drawmatch")

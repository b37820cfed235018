"""Config loading: defaults, YAML, overrides, unknown keys and wrong types."""

from __future__ import annotations

import math

import pytest
import yaml

from drawmatch.cli import main, parse_job_config
from drawmatch.core.config import ConfigError, load_config, save_config, to_dict
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from tests.conftest import ray_never_started


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "embed.yaml"
    path.write_text("out: runs/a\nbatch_size: 8\nmodel:\n  backbone: resnet50\n  image_size: 224\n")
    cfg = load_config(EmbedConfig, path, ["batch_size=2", "model.pooling=gem"])
    assert cfg.out == "runs/a"
    assert cfg.batch_size == 2
    assert cfg.model.backbone == "resnet50"
    assert cfg.model.image_size == 224
    assert cfg.model.pooling == "gem"
    assert cfg.model.pretrained is True  # untouched default


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["batchsize=2"], "unknown config key(s) batchsize"),
        (["model.backbon=x"], "model.backbon"),
        (["batch_size=two"], "batch_size: expected int"),
        (["model.pretrained=maybe"], "model.pretrained: expected bool"),
        (["collections=drawing"], "collections: expected a list"),
        (["kind=bogus"], None),
        (["noequals"], "not of the form key=value"),
    ],
)
def test_bad_keys_and_types_are_clear_errors(overrides, message):
    cls = IndexConfig if overrides == ["kind=bogus"] else EmbedConfig
    with pytest.raises(ConfigError) as err:
        load_config(cls, None, overrides)
    if message:
        assert message in str(err.value)


def test_floats_in_exponent_form_are_floats():
    from drawmatch.jobs.train import TrainConfig

    assert load_config(TrainConfig, None, ["lr=1e-4"]).lr == 1e-4
    with pytest.raises(ConfigError, match="lr: expected float"):
        load_config(TrainConfig, None, ["lr=fast"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("out: x\nnum_actor: 3\n")
    with pytest.raises(ConfigError, match="num_actor"):
        load_config(EmbedConfig, path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(EmbedConfig, None, ["model.backbone=tiny", "collections=[artwork]"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(EmbedConfig, tmp_path / "resolved.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text()) == to_dict(cfg)


def test_cli_flag_is_an_override():
    cfg = parse_job_config("embed", ["--weights", "ckpt.pt", "out=o"])
    assert cfg.model.weights == "ckpt.pt"
    assert cfg.out == "o"


def test_cli_config_error_exits_2_before_work(tmp_path, capsys):
    assert main(["embed", f"out={tmp_path}", "bogus=1"]) == 2
    assert "config error" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


def test_cli_unknown_job(capsys):
    assert main(["nope"]) == 2
    assert "unknown job" in capsys.readouterr().err


def test_every_example_config_loads():
    from pathlib import Path

    from drawmatch.cli import JOBS

    configs = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        job = path.stem.split("-")[0]  # embed-laptop, train-tuned: variants of a job's config
        load_config(JOBS[job].config_class(), path)  # raises on any unknown key or wrong type


def config_class(name: str) -> type:
    """A job's config class by its name (`TrainConfig`), from the job registry."""
    from drawmatch.cli import JOBS

    return {job.config: job.config_class() for job in JOBS.values()}[name]


# the region search keys of search and evaluate (one RegionSearchParams section in both)
REGION_SEARCH_BAD = {
    "region.weight": ["-1"],
    "region.margin": ["3"],
    "region.n_hits": ["0"],
    "region.verify_top": ["-1"],
    "region.min_inliers": ["2"],
    "region.ratio": ["0", "1.5"],
    "region.rootsift": ["maybe", "2"],
    "region.query_feature_side": ["16"],
    "region.query_n_features": ["0"],
    "region.shortlist": ["tfidf"],
    "region.words": ["1"],
}

# every key with a range or a set of choices, and values it must refuse (as override text)
BAD_VALUES: dict[str, dict[str, list[str]]] = {
    "SimilarConfig": {
        "k": ["0", "1001"],
        "kind": ["'annoy'"],
        "nlist": ["0"],
        "nprobe": ["0"],
        "hnsw_m": ["0", "1"],
        "ef_search": ["-3", "0"],
        "chunk": ["0"],
    },
    "ThumbnailsConfig": {
        "sizes": ["[]", "[16]", "[5000]"],
        "quality": ["0", "101"],
        "collections": ["[verso]", "[]"],
        "batch_size": ["0", "-3"],
        "concurrency": ["0"],
        "max_image_pixels": ["0"],
        "ray.num_cpus": ["0"],
    },
    "ServeConfig": {
        "port": ["-1", "65536"],
        "k": ["0", "201"],
        "page_size": ["0"],
        "max_upload_bytes": ["0"],
        "kept_upload_bytes": ["-1", "inf"],
        "max_upload_pixels": ["0"],
        "max_image_pixels": ["0"],
        "thumb_size": ["16"],
        "view_size": ["5000"],
        "log_level": ["'loud'"],
        "host": ["''"],
    },
    "IngestConfig": {
        "out": ["''"],
        "drawings_root": ["''"],
        "extensions": ["[]", "['']"],
        "max_image_pixels": ["0", "-1"],
        "ray.num_cpus": ["0", "-2"],
        "ray.address": ["''"],
    },
    "AugmentConfig": {
        "styles": ["[]", "[sepia]", "[oil, '']"],
        "select": ["some"],
        "max_side": ["0", "-5", "16"],
        "jpeg_quality": ["0", "101", "-1"],
        "batch_size": ["0", "-3"],
        "concurrency": ["0", "-1"],
        "max_image_pixels": ["0"],
        "params.oil_size": ["0", "-1"],
        "params.oil_dyn_ratio": ["0"],
        "params.watercolor_sigma_s": ["-1", "201"],
        "params.watercolor_sigma_r": ["-0.1", "1.5"],
        "params.texture_sigma_s": ["-1", "300"],
        "params.texture_sigma_r": ["-0.1", "2"],
        "params.pencil_blur_ksize": ["0", "-3", "100"],
        "params.pencil_scale": ["0", "-1"],
        "neural_reference": ["paired", "drawings"],
        "neural.size": ["0", "16"],
        "neural.steps": ["0", "-1"],
        "neural.optimizer": ["sgd"],
        "neural.lr": ["0", "-0.1"],
        "neural.content_weight": ["-1"],
        "neural.style_weight": ["-1"],
        "neural.tv_weight": ["-0.5"],
        "neural.init_noise": ["-0.1", "1.5"],
        "neural.seed": ["-1"],
        "neural.backbone": ["''"],
        "neural.content_layer": ["''"],
        "neural.style_layers": ["[]", "['']"],
    },
    "StylizeConfig": {
        "content": ["''"],
        "style": ["''"],
        "out": ["''"],
        "jpeg_quality": ["0", "101"],
        "max_image_pixels": ["0"],
        "params.size": ["8"],
        "params.steps": ["0"],
        "params.optimizer": ["bfgs"],
        "params.lr": ["0"],
        "params.content_weight": ["-1"],
        "params.style_weight": ["-2"],
        "params.tv_weight": ["-1"],
        "params.init_noise": ["2"],
        "params.seed": ["-3"],
    },
    "EmbedConfig": {
        "collections": ["[]", "[drawings]"],
        "batch_size": ["0", "-3"],
        "num_actors": ["0", "-1"],
        "cpus_per_actor": ["0", "-1"],
        "gpus_per_actor": ["-1", "-0.5"],
        "decode_batch_size": ["0"],
        "decode_cpus": ["0", "-0.5"],
        "decode_concurrency": ["0", "-2"],
        "rows_per_file": ["0", "-1"],
        "max_image_pixels": ["0"],
        "nice": ["20", "-21"],
        "model.image_size": ["0", "31", "-280"],
        "model.pooling": ["mean"],
        "model.runtime": ["tensorrt"],
        "model.backbone": ["''"],
        "model.weights": ["''"],
    },
    "IndexConfig": {
        "kind": ["bogus"],
        "nlist": ["0", "-1"],
        "nprobe": ["0"],
        "hnsw_m": ["0", "1"],
        "ef_search": ["0"],
        "model_tag": ["''"],
    },
    "SearchConfig": {
        "k": ["0", "-1"],
        "query": ["''"],
        "sheet": ["''"],
        "out": ["''"],
        **REGION_SEARCH_BAD,
        "batch_size": ["0", "-3"],
        "num_actors": ["0", "-1"],
        "cpus_per_actor": ["0", "-1"],
        "gpus_per_actor": ["-1"],
        "decode_batch_size": ["0"],
        "decode_cpus": ["0", "-0.5"],
        "rows_per_file": ["0", "-1"],
        "max_image_pixels": ["0"],
        "nice": ["20", "-21"],
    },
    "EvaluateConfig": {
        **REGION_SEARCH_BAD,
        "ks": ["[]", "[0]", "[1, -5]"],
        "split_set": ["training", "TEST"],
        "runs": ["''"],
        "detection_k": ["0", "1001"],
        "max_flagged": ["-0.01", "1.5", "nan"],
    },
    "RegionsConfig": {
        "out": ["''"],
        "model_tag": ["''"],
        "region_size": ["16"],
        "levels": ["[]", "[0]"],
        "overlap": ["1.0", "-0.1"],
        "index_kind": ["bogus"],
        "local_features": ["surf"],
        "nlist": ["0"],
        "nprobe": ["0"],
        "pq_m": ["0"],
        "hnsw_m": ["0"],
        "ef_search": ["0"],
        "feature_side": ["8"],
        "n_features": ["0"],
        "batch_size": ["0"],
        "num_actors": ["0"],
        "cpus_per_actor": ["0"],
        "gpus_per_actor": ["-1"],
        "decode_batch_size": ["0"],
        "decode_cpus": ["0"],
        "rows_per_file": ["0"],
        "max_image_pixels": ["0"],
    },
    "DemoConfig": {
        "image_size": ["0", "16"],
        "batch_size": ["0"],
        "styles": ["[]", "[sepia]"],
        "examples": ["0", "-1"],
        "ray.num_cpus": ["0"],
    },
    "SplitConfig": {
        "n_folds": ["0", "-1"],
        "seed": ["-1"],
        "train": ["-0.1", "1.5", "0.9"],
        "val": ["-0.25"],
        "test": ["2"],
    },
    "TrainConfig": {
        "loss": ["hinge"],
        "batchnorm": ["none"],
        "margin": ["0", "-0.7", ".nan"],
        "lr": ["0", "-1e-4"],
        "weight_decay": ["-1e-4"],
        "lr_step_epochs": ["0"],
        "lr_gamma": ["0", "-0.1"],
        "epochs": ["0", "-1"],
        "batch_size": ["0"],
        "n_hardest": ["0"],
        "bank_refresh_steps": ["-1"],
        "train_resize": ["100"],  # below the default train_crop 280
        "train_crop": ["16", "400"],
        "patience": ["0"],
        "max_steps_per_epoch": ["0"],
        "eval_batch_size": ["0"],
        "num_workers": ["0"],
        "cpus_per_worker": ["0", "-1"],
        "max_failures": ["-2"],
        "seed": ["-1"],
        "run_name": ["''", "a/b", ".."],
        "model.image_size": ["8"],
        "model.pooling": ["gem2"],
        "temperature": ["0", "-0.1"],
        "positives_per_anchor": ["0"],
        "train_blocks": ["-1"],
        "l2sp": ["-0.01", ".nan"],
        "lr_schedule": ["linear"],
        "selection": ["best"],
        "pseudo_epochs": ["-1"],
        "pseudo_effects": ["[]", "[sketchy]"],
        "pseudo_detail_share": ["-0.1", "1.5"],
        "pseudo_min_crop": ["0.05", "1.2"],
        "pseudo_warp": ["-0.1", "0.5"],
    },
    "SweepConfig": {
        "losses": ["[]", "[hinge]"],
        "l2sp": ["[]", "[-1]"],
        "train_blocks": ["[]", "[-1]"],
        "pseudo_epochs": ["[]", "[-1]"],
        "name": ["''", "x/y"],
        "margins": ["[]", "[0]", "[0.7, -1]"],
        "lrs": ["[]", "[0]"],
        "backbones": ["[]", "['']"],
        "use_styles": ["[]"],
        "n_hardest": ["[]", "[0]"],
        "screen_fold": ["-1"],
        "max_folds": ["0"],
        "top_k": ["0"],
        "grace_period": ["0", "11"],  # more than base.epochs (10)
        "reduction_factor": ["1", "0"],
        "max_concurrent_trials": ["0"],
        "trial_cpus": ["-0.1"],
        "base.epochs": ["0"],
        "base.lr": ["0"],
        "base.model.image_size": ["0"],
        "ray.num_cpus": ["0"],
    },
    "VerifyConfig": {
        "out": ["''"],
        "run_name": ["''", "a/b"],
        "loss": ["hinge"],
        "triplets": ["hardest"],
        "batchnorm": ["sync"],
        "margin": ["0", "-0.7", ".nan"],
        "lr": ["0", "-1e-5"],
        "weight_decay": ["-1e-4"],
        "epochs": ["-1"],
        "steps_per_epoch": ["0"],
        "batch_size": ["0"],
        "labels_per_batch": ["1", "0"],
        "images_per_label": ["1"],
        "train_resize": ["100"],  # below the default train_crop 280
        "train_crop": ["16", "400"],
        "test_labels": ["0", "0.95", "-0.2"],
        "val_images": ["-0.1", "1"],
        "eval_triplets": ["0"],
        "max_pair_images": ["1"],
        "patience": ["0"],
        "eval_batch_size": ["0"],
        "num_workers": ["0"],
        "cpus_per_worker": ["0"],
        "seed": ["-1"],
        "model.image_size": ["8"],
        "model.pooling": ["gem2"],
        "data.images": ["''"],
        "data.labels_csv": ["''"],
        "data.label_column": ["''"],
        "data.label_pattern": ["'('", "''"],
        "data.folder_depth": ["0"],
        "data.min_per_label": ["0"],
        "data.extensions": ["[]"],
    },
    "ClassifyConfig": {
        "method": ["svm"],
        "batchnorm": ["sync"],
        "model_tag": ["''"],
        "run_name": [".."],
        "val": ["-0.1", "0.95"],
        "test": ["-0.1", "0.95"],
        "probe_l2": ["[]", "[-1]"],
        "probe_max_iter": ["0"],
        "lr": ["0"],
        "head_lr": ["0", "-1"],
        "weight_decay": ["-1"],
        "epochs": ["0"],
        "batch_size": ["0"],
        "max_steps_per_epoch": ["0"],
        "train_resize": ["100"],
        "train_crop": ["16"],
        "patience": ["0"],
        "eval_batch_size": ["0"],
        "num_workers": ["0"],
        "cpus_per_worker": ["0"],
        "seed": ["-1"],
        "model.image_size": ["8"],
        "model.pooling": ["gem2"],
        "data.folder_depth": ["0"],
        "data.min_per_label": ["0"],
    },
}
CASES = [
    (cls_name, key, bad)
    for cls_name, keys in BAD_VALUES.items()
    for key, values in keys.items()
    for bad in values
]


@pytest.mark.parametrize("cls_name, key, bad", CASES)
def test_every_bad_value_is_refused_naming_its_key(cls_name, key, bad):
    cls = config_class(cls_name)
    with pytest.raises(ConfigError) as err:
        load_config(cls, None, [f"{key}={bad}"])
    message = str(err.value)
    # the full dotted key (a list item as key[i]) is named, and so is the bad value; a nested
    # key's section is named once (region.min_inliers, not region.region.min_inliers)
    assert message.startswith(key) or message.startswith(f"{key}[") or key in message, message
    section = key.split(".")[0]
    assert f"{section}.{section}." not in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "cls_name, key, good",
    [
        ("EmbedConfig", "gpus_per_actor", "0"),
        ("EmbedConfig", "decode_concurrency", "null"),
        ("EmbedConfig", "nice", "null"),
        ("EmbedConfig", "nice", "19"),
        ("EmbedConfig", "model.runtime", "onnx"),
        ("AugmentConfig", "jpeg_quality", "100"),
        ("AugmentConfig", "jpeg_quality", "1"),
        ("AugmentConfig", "styles", "[oil, neural]"),
        ("AugmentConfig", "neural.style_weight", "0"),
        ("AugmentConfig", "neural.init_noise", "0"),
        ("StylizeConfig", "params.optimizer", "lbfgs"),
        ("TrainConfig", "max_failures", "-1"),
        ("TrainConfig", "bank_refresh_steps", "0"),
        ("SweepConfig", "trial_cpus", "0"),
        ("SplitConfig", "train", "1.0"),  # with val and test below, checked together
        ("VerifyConfig", "epochs", "0"),  # scores the starting weights only
        ("VerifyConfig", "val_images", "0"),
        ("ClassifyConfig", "test", "0"),
    ],
)
def test_edge_values_that_make_sense_are_accepted(cls_name, key, good):
    extra = ["val=0", "test=0"] if cls_name == "SplitConfig" else []
    load_config(config_class(cls_name), None, [f"{key}={good}", *extra])


def test_every_ranged_key_has_bad_values_listed():
    """Each int/float/choice key of every job's config appears in BAD_VALUES (walked here from
    the dataclasses, independently of the code under test), unless it has no invalid value."""
    import dataclasses
    import typing

    unchecked = []
    for cls_name in BAD_VALUES:
        cls = config_class(cls_name)

        def walk(tp, prefix=""):
            hints = typing.get_type_hints(tp)
            for f in dataclasses.fields(tp):
                hint = hints[f.name]
                if dataclasses.is_dataclass(hint):
                    yield from walk(hint, f"{prefix}{f.name}.")
                    continue
                if hint in (int, float, int | None, float | None) or f.name in (
                    "kind",
                    "select",
                    "loss",
                    "batchnorm",
                    "pooling",
                    "split_set",
                    "styles",
                ):
                    yield f"{prefix}{f.name}"

        for key in walk(cls):
            if key in BAD_VALUES[cls_name]:
                continue
            if key.startswith("ray.") and cls_name not in (
                "IngestConfig",
                "DemoConfig",
                "SweepConfig",
            ):
                continue  # RayConfig is the same class everywhere: listed under three jobs
            if cls_name == "SweepConfig" and key.startswith("base."):
                continue  # TrainConfig's keys, listed under TrainConfig
            unchecked.append(f"{cls_name}.{key}")
    assert unchecked == []


def test_neural_style_needs_a_content_or_style_weight():
    from drawmatch.jobs.stylize import StylizeConfig

    with pytest.raises(ConfigError, match="content_weight, style_weight"):
        load_config(StylizeConfig, None, ["params.content_weight=0", "params.style_weight=0"])


def _float_keys(cls: type, prefix: str = ""):
    """(dotted key, is a list) of every float key of a config class, nested sections walked."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _float_keys(hint, f"{prefix}{f.name}.")
        elif hint in (float, float | None, tuple[float, ...]):
            yield f"{prefix}{f.name}", hint == tuple[float, ...]


def _every_float_key():
    from drawmatch.cli import JOBS

    return [(job, *k) for job in sorted(JOBS) for k in _float_keys(JOBS[job].config_class())]


@pytest.mark.parametrize("job, key, is_list", _every_float_key())
def test_every_float_key_refuses_infinite_nan_and_overflowing_values(job, key, is_list):
    """inf, -inf, nan and values large enough to overflow what they scale are refused, in one
    line naming the key (every float key has a finite range)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from drawmatch.cli import JOBS

    cls = JOBS[job].config_class()
    bad = st.one_of(
        st.sampled_from([math.inf, -math.inf, math.nan]),
        st.floats(min_value=1e10, allow_infinity=False),
        st.floats(max_value=-1e10, allow_infinity=False),
    )

    @settings(max_examples=15, deadline=None)
    @given(bad)
    def refused(value: float) -> None:
        text = f"[{value!r}]" if is_list else repr(value)
        with pytest.raises(ConfigError) as err:
            load_config(cls, None, [f"{key}={text}"])
        message = str(err.value)
        assert message.startswith(key) and "\n" not in message, message

    refused()


@pytest.mark.parametrize(
    "argv, key",
    [
        (["search", "mode=fused", "region.weight=inf"], "region.weight"),
        (["search", "mode=fused", "region.weight=1e308"], "region.weight"),
        (["search", "mode=fused", "region.weight=1.0e+308"], "region.weight"),
        (["stylize", "params.style_weight=inf"], "params.style_weight"),
        (["stylize", "params.style_weight=1e308"], "params.style_weight"),
        (["stylize", "params.lr=inf"], "params.lr"),
        (["stylize", "params.tv_weight=.inf"], "params.tv_weight"),
        (["stylize", "params.tv_weight=1e10"], "params.tv_weight"),
        (["similar", "kind=hnsw", "hnsw_m=0"], "hnsw_m"),
        (["similar", "kind=ivf", "nprobe=0"], "nprobe"),
        (["similar", "kind=ivf", "nlist=0"], "nlist"),
        (["similar", "kind=hnsw", "ef_search=-3"], "ef_search"),
        (["similar", "kind=hnsw", "hnsw_m=2147483647"], "hnsw_m"),  # FAISS fails mid-build
        (["index", "kind=hnsw", "ef_search=2147483647"], "ef_search"),  # bad_alloc mid-search
        (["embed", "model.image_size=100000"], "model.image_size"),  # 10^10 pixels per image
        (["augment", "max_side=4097"], "max_side"),
        (["regions", "levels=[1, 100000]"], "levels[1]"),  # 10^10 windows per artwork
        (["thumbnails", "concurrency=0"], "concurrency"),
        (["thumbnails", "batch_size=0"], "batch_size"),
        (["serve", "max_image_pixels=0"], "max_image_pixels"),
        (["search", "k=1000000000000000000000000000000"], "k"),
        (["search", "k=" + "9" * 5000], "k"),  # past Python's int-to-text digit limit
        (["search", "k=1e3"], "k"),
        (["search", "batch=1"], "batch"),
        (["search", "k=[1"], "k"),  # malformed YAML
        (["search", "k=*alias"], "k"),
        (["search", "k=!!python/object:os.system x"], "k"),
        (["search", "k=" + "[" * 3000 + "]" * 3000], "k"),  # nested past the recursion limit
        (["search", "where.artist="], "where.artist"),
        (["search", "where.artist=[a]"], "where.artist"),
        (["search", "where.artist.x=a"], "where.artist"),
        (["search", "where.=a"], "where."),
        (["search", "k..x=1"], "k..x"),
        (["report", "seed=-5"], "seed"),
        (["train", "lr=" + "1" * 400], "lr"),  # an int too large to become a float
        (["evaluate", "ks=[1, 10000000000]"], "ks[1]"),
    ],
)
def test_cli_refuses_each_bad_value_in_one_line_naming_its_key(argv, key, tmp_path, capsys):
    """A bad value costs exit code 2 and one stderr line naming its key, before Ray starts and
    before anything is written."""
    out = f"out={tmp_path / 'x.jpg'}" if argv[0] == "stylize" else f"out={tmp_path}"
    with ray_never_started():
        assert main([argv[0], out, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config error" in err and key in err, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text, key",
    [
        ("k: " + "9" * 5000 + "\n", "--config"),
        ("k: " + "[" * 3000 + "]" * 3000 + "\n", "--config"),
        ("1: x\nbogus: 2\n", "1"),
        ("region:\n  7: x\n", "region.7"),
        ("where:\n  ~: x\n", "where"),
    ],
)
def test_config_file_values_that_cannot_be_keys_or_numbers_are_refused(text, key, tmp_path):
    """A value too long or deep to read, or a key that is not a name: one line, not a crash."""
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        parse_job_config("search", ["--config", str(tmp_path / "bad.yaml"), "batch=true"])
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message, message

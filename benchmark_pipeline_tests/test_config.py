"""Loading the pipeline config: the embedded demo, environment overrides, and errors that name the field."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark_pipeline.benchmarking.keys import compute_config_hash
from benchmark_pipeline.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    ConfigError,
    PipelineConfig,
    config_from_dict,
    load_config,
)
from benchmark_pipeline.demo.settings import validate_demo_config

RawFactory = Callable[..., dict[str, Any]]


def test_demo_config_loads(tmp_path: Path) -> None:
    config = load_config(env={"BENCHMARK_PIPELINE_ROOT": str(tmp_path)})
    assert isinstance(config, PipelineConfig)
    assert config.source_path.endswith("configs/demo.yaml")
    assert config.backbones == ("tiny_transformer", "bilstm")
    assert config.variants == ("v1", "v2")
    assert config.objective == {"metric": "macro-f1", "direction": "maximize"}
    assert config.environment == "local"
    assert config.root_dir == tmp_path.resolve()
    # Defaults derived from the root: a local sqlite MLflow store and the HPO folder per environment.
    assert config.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'outputs' / 'mlflow' / 'mlflow.db'}"
    assert config.hpo_output_dir == tmp_path.resolve() / "outputs" / "hpo" / "local"
    assert config.hpo_experiments() == {
        "tiny_transformer": {"name": "hpo-tiny_transformer"},
        "bilstm": {"name": "hpo-bilstm"},
    }
    assert config.benchmark_experiment() == {"name": "benchmarks"}
    assert config.benchmark_config["batch_sizes"] == [1, 8, 32]


def test_config_file_path_and_env_overrides(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(tiny_raw_config("/nonexistent/root", "http://example.invalid:5000")), encoding="utf-8"
    )
    plain = load_config(path, env={})
    assert plain.mlflow.tracking_uri == "http://example.invalid:5000"
    assert plain.root_dir == Path("/nonexistent/root")
    assert plain.source_path == str(path)

    root = tmp_path / "elsewhere"
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1234",
        "BENCHMARK_PIPELINE_ROOT": str(root),
        "BENCHMARK_PIPELINE_HPO_DIR": "hpo-here",
        "BENCHMARK_PIPELINE_ENVIRONMENT": "ci",
    }
    overridden = load_config(path, env=env)
    assert overridden.mlflow.tracking_uri == "http://127.0.0.1:1234"
    assert overridden.root_dir == root.resolve()
    assert overridden.environment == "ci"
    # A relative HPO dir is resolved against the (overridden) root.
    assert overridden.hpo_output_dir == root.resolve() / "hpo-here"
    # BENCHMARK_PIPELINE_CONFIG picks the file when no path is given.
    assert load_config(env={"BENCHMARK_PIPELINE_CONFIG": str(path)}).source_path == str(path)


def test_hpo_output_dir_defaults_under_root_per_environment(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    config = config_from_dict(tiny_raw_config(tmp_path), env={})
    assert config.hpo_output_dir == tmp_path.resolve() / "outputs" / "hpo" / "test"
    assert config.mlflow.tracking_uri.startswith("sqlite:///")


def _expect_error(raw: Any, *fragments: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, env={})
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"benchmark_config": {"batch_sizes": "8"}}, ("benchmark_config.batch_sizes", "must be list", "'8'")),
        ({"benchmark_config": {"batch_sizes": []}}, ("benchmark_config.batch_sizes must not be empty",)),
        ({"benchmark_config": {"batch_sizes": [1, 0]}}, ("benchmark_config.batch_sizes", "positive integers", "0")),
        ({"benchmark_config": {"batch_sizes": [1, True]}}, ("benchmark_config.batch_sizes", "True")),
        ({"benchmark_config": {"iterations": -1}}, ("benchmark_config.iterations", "> 0", "-1")),
        ({"benchmark_config": {"iterations": 2.5}}, ("benchmark_config.iterations", "must be int")),
        ({"benchmark_config": {"warmup": -1}}, ("benchmark_config.warmup", ">= 0")),
        ({"benchmark_config": {"min_duration_s": "fast"}}, ("benchmark_config.min_duration_s",)),
        ({"benchmark_config": {"device": "tpu"}}, ("benchmark_config.device", "'tpu'", "cuda")),
        ({"benchmark_config": {"backends": ["tensorrt"]}}, ("benchmark_config.backends", "tensorrt")),
        ({"benchmark_config": {"intra_op_threads": -2}}, ("benchmark_config.intra_op_threads",)),
        ({"benchmark_config": {"max_length": None}}, ("benchmark_config.max_length is required",)),
        (
            {"hpo_config": {"objective": {"direction": "upward"}}},
            ("hpo_config.objective.direction", "'upward'", "maximize"),
        ),
        ({"hpo_config": {"objective": {"metric": None}}}, ("hpo_config.objective.metric is required",)),
        ({"data_config": {"version": None}}, ("data_config.version is required",)),
        ({"data_config": {"version": "1/2"}}, ("data_config.version", "'1/2'")),
        ({"backbones": []}, ("config.backbones must name at least one backbone",)),
        ({"backbones": ["bilstm", "bilstm"]}, ("config.backbones has duplicates",)),
        ({"backbones": ["bi:lstm"]}, ("config.backbones[]", "'bi:lstm'")),
        ({"environment": "prod/eu"}, ("environment", "'prod/eu'")),
        ({"environment": 3}, ("config.environment must be str",)),
        ({"mlflow": "http://x"}, ("config.mlflow must be a mapping",)),
        ({"mlflow": {"tracking_uri": 5000}}, ("config.mlflow.tracking_uri must be a string",)),
        ({"optuna": {"storages": "sqlite:///x.db"}}, ("config.optuna.storages",)),
        (
            {"optuna": {"sweep_storage": "/data/optuna.db"}},
            ("config.optuna.sweep_storage", "storage URL", "'/data/optuna.db'"),
        ),
        ({"benchmark_config": None}, ("benchmark_config must be a mapping", "NoneType")),
    ],
)
def test_wrong_values_raise_config_error_naming_the_field(
    tmp_path: Path, tiny_raw_config: RawFactory, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    _expect_error(tiny_raw_config(tmp_path, **overrides), *fragments)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"hpo_config": {"variants": {"v1": {"n_trials": 0}}}}, ("hpo_config.variants.v1.n_trials", "> 0")),
        ({"hpo_config": {"variants": {"v1": {"epochs": "3"}}}}, ("hpo_config.variants.v1.epochs", "must be int")),
        (
            {
                "hpo_config": {
                    "variants": {"v1": {"search_space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}}
                }
            },
            ("hpo_config.variants.v1.search_space.dropout", "low (0.5) must be <= high (0.1)"),
        ),
        (
            {"hpo_config": {"variants": {"v1": {"search_space": {"width": {"type": "choice"}}}}}},
            ("hpo_config.variants.v1.search_space.width", "categorical"),
        ),
        ({"data_config": {"vocab_size": 10}}, ("data_config.vocab_size must be >= 64",)),
        ({"data_config": {"max_length": 4}}, ("data_config.max_length must be >= 8",)),
        ({"data_config": {"train_size": "96"}}, ("data_config.train_size", "must be int")),
        ({"data_config": {"seed": -1}}, ("data_config.seed", ">= 0")),
        ({"data_config": {"seed": True}}, ("data_config.seed must be a number", "True")),
    ],
)
def test_demo_only_fields_are_checked_by_the_demo_not_the_core(
    tmp_path: Path, tiny_raw_config: RawFactory, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    # The core loads the config (retrieval and benchmarking do not read these fields) ...
    config = config_from_dict(tiny_raw_config(tmp_path, **overrides), env={})
    # ... and the demo, which does, refuses it naming the field.
    with pytest.raises(ConfigError) as caught:
        validate_demo_config(config)
    for fragment in fragments:
        assert fragment in str(caught.value), f"{fragment!r} not in {caught.value!r}"


def test_design_document_shaped_config_loads_without_demo_fields(tmp_path: Path) -> None:
    raw = {
        "environment": "prod",
        "root_dir": str(tmp_path),
        "backbones": ["distilbert", "distilroberta"],
        "data_config": {"name": "conll", "version": "3"},
        "hpo_config": {"objective": {"metric": "macro-f1", "direction": "maximize"}},
        "benchmark_config": {"batch_sizes": [1, 8], "iterations": 10, "warmup": 2, "max_length": 64, "device": "cpu"},
    }
    config = config_from_dict(raw, env={})
    assert config.variants == () and "backends" not in config.benchmark_config
    with pytest.raises(ConfigError, match="not backbones of the embedded demo"):
        validate_demo_config(config)


def test_unsafe_variant_name(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    raw = tiny_raw_config(tmp_path)
    raw["hpo_config"]["variants"]["v'1"] = raw["hpo_config"]["variants"].pop("v1")
    _expect_error(raw, "hpo_config.variants.v'1")


def test_no_variants(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    raw = tiny_raw_config(tmp_path)
    raw["hpo_config"]["variants"] = {}
    # No variants is fine for retrieval (they are discovered from the records); the demo's sweeps need some.
    with pytest.raises(ConfigError, match=r"hpo_config\.variants must name at least one variant"):
        validate_demo_config(config_from_dict(raw, env={}))


@pytest.mark.parametrize("raw", [None, [], "environment: local", 42])
def test_non_mapping_top_level(raw: Any) -> None:
    _expect_error(raw, "the top level must be a mapping")


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("environment: local\nbackbones: [bilstm\n  data_config: {", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        load_config(path, env={})


def test_yaml_list_at_top_level_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping, got list"):
        load_config(path, env={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", env={})


def test_make_config_gives_each_config_its_own_experiments(
    make_config: Callable[..., PipelineConfig], mlflow_server: str, tmp_path: Path
) -> None:
    first = make_config(tmp_path, hpo_config={"variants": {"v2": None}})
    second = make_config(tmp_path)
    assert first.mlflow.tracking_uri == second.mlflow.tracking_uri == mlflow_server
    assert first.mlflow.hpo_experiment_prefix != second.mlflow.hpo_experiment_prefix
    assert first.mlflow.benchmark_experiment != second.mlflow.benchmark_experiment
    assert first.variants == ("v1",) and second.variants == ("v1", "v2")
    assert first.hpo_output_dir == tmp_path.resolve() / "outputs" / "hpo" / "test"


# ------------------------------------------------------------------------------------------- input limits


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" document: each level is a list of ``width`` aliases of the previous one, so the
    last expands to ``width ** levels`` strings (9**9: 387 million) once anything walks it."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(f"  {line}" for line in lines)


def _config_yaml(tmp_path: Path, tiny_raw_config: RawFactory, benchmark_extra: str = "") -> Path:
    raw = tiny_raw_config(tmp_path)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw) + benchmark_extra, encoding="utf-8")
    return path


def test_yaml_alias_bomb_under_benchmark_config_is_refused_at_once(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    raw = tiny_raw_config(tmp_path)
    benchmark = yaml.safe_dump(raw.pop("benchmark_config"))
    text = (
        yaml.safe_dump(raw)
        + "benchmark_config:\n"
        + "".join(f"  {line}\n" for line in benchmark.splitlines())
        + _alias_bomb()
        + "\n"
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"refusing the alias bomb took {elapsed:.2f}s"
    message = str(caught.value)
    assert str(path) in message and "anchors and aliases" in message
    first_anchor = next(number for number, line in enumerate(text.splitlines(), 1) if "&a0" in line)
    assert f"line {first_anchor}:" in message, "the error points at the first anchor"


@pytest.mark.parametrize(
    "snippet",
    [
        "shared: &batch [1, 4]\n",  # an anchor alone
        "benchmark_defaults: {<<: {warmup: 1}}\nother: *undefined\n",  # an alias (undefined, still refused as an alias)
        "x: &m {a: 1}\ny: {<<: *m}\n",  # a merge key
    ],
)
def test_yaml_anchors_aliases_and_merge_keys_are_refused(
    tmp_path: Path, tiny_raw_config: RawFactory, snippet: str
) -> None:
    path = _config_yaml(tmp_path, tiny_raw_config, snippet)
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: line \d+: YAML anchors and aliases"):
        load_config(path, env={})


def test_oversized_config_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:  # a sparse 4 GiB file: reading it whole would take 4 GiB of memory
        handle.truncate(4 * 1024**3)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"huge\.yaml is larger than {MAX_CONFIG_BYTES} bytes"):
        load_config(path, env={})
    assert time.monotonic() - started < 2.0


def test_config_just_over_the_size_limit_is_refused(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    text = yaml.safe_dump(tiny_raw_config(tmp_path))
    path = tmp_path / "padded.yaml"
    path.write_text(text + "#" * (MAX_CONFIG_BYTES - len(text.encode())), encoding="utf-8")
    assert load_config(path, env={}).backbones  # exactly the limit: accepted
    path.write_text(text + "#" * (MAX_CONFIG_BYTES + 1 - len(text.encode())), encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path, env={})


def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("data_config: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"deep\.yaml: line 1: nested more than {MAX_CONFIG_DEPTH} levels deep"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"backbone": ["bilstm"]}, ("config has an unknown key 'backbone'", "did you mean 'backbones'?")),
        (
            {"hpo_output_directory": "x"},
            ("config has an unknown key 'hpo_output_directory'", "did you mean 'hpo_output_dir'?"),
        ),
        (
            {"mlflow": {"tracking_url": "http://x"}},
            ("config.mlflow has an unknown key 'tracking_url'", "did you mean 'tracking_uri'?"),
        ),
        ({"mlflow": {"timeout": 5}}, ("config.mlflow has an unknown key 'timeout'", "did you mean 'timeout_s'?")),
        (
            {"optuna": {"storage": ["sqlite:///x.db"]}},
            ("config.optuna has an unknown key 'storage'", "did you mean 'storages'?"),
        ),
        (
            {"benchmark_config": {"iteration": 3}},
            ("benchmark_config has an unknown key 'iteration'", "did you mean 'iterations'?"),
        ),
        (
            {"benchmark_config": {"devcie": "cuda"}},
            ("benchmark_config has an unknown key 'devcie'", "did you mean 'device'?"),
        ),
        (
            {"hpo_config": {"objective": {"directon": "minimize"}}},
            ("hpo_config.objective has an unknown key 'directon'", "did you mean 'direction'?"),
        ),
        (
            {"zzz_unrelated": 1},
            ("config has an unknown key 'zzz_unrelated' (valid keys: environment, root_dir, backbones",),
        ),
    ],
)
def test_unknown_keys_are_errors_that_suggest_the_nearest_key(
    tmp_path: Path, tiny_raw_config: RawFactory, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    message = _expect_error(tiny_raw_config(tmp_path, **overrides), *fragments)
    if "zzz" in message:
        assert "did you mean" not in message


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(tmp_path, benchmark_config={"warmups": 2})), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"typo\.yaml: benchmark_config has an unknown key 'warmups'; did you mean 'warmup'\?"
    ):
        load_config(path, env={})


def test_data_config_and_hpo_config_stay_free_form(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    config = config_from_dict(
        tiny_raw_config(tmp_path, data_config={"tokenizer": "bert-base"}, hpo_config={"team_notes": {"owner": "nlp"}}),
        env={},
    )
    assert config.data_config["tokenizer"] == "bert-base" and config.hpo_config["team_notes"] == {"owner": "nlp"}


def test_operational_settings_are_accepted_checked_and_never_hashed(
    tmp_path: Path, tiny_raw_config: RawFactory
) -> None:
    plain = config_from_dict(tiny_raw_config(tmp_path), env={})
    with_settings = config_from_dict(
        tiny_raw_config(
            tmp_path, mlflow={"timeout_s": 30, "max_retries": 0}, benchmark_config={"stale_running_after_s": 3600}
        ),
        env={},
    )
    assert with_settings.benchmark_config["stale_running_after_s"] == 3600
    # Watching benchmarks is not what is measured: every benchmark key stays what it was.
    assert compute_config_hash(with_settings.benchmark_config) == compute_config_hash(plain.benchmark_config)
    for overrides, fragment in [
        ({"mlflow": {"timeout_s": 0}}, "config.mlflow.timeout_s must be a positive number, got 0"),
        ({"mlflow": {"timeout_s": "30"}}, "config.mlflow.timeout_s must be a positive number"),
        ({"mlflow": {"timeout_s": True}}, "config.mlflow.timeout_s must be a positive number"),
        ({"mlflow": {"max_retries": -1}}, "config.mlflow.max_retries must be >= 0"),
        ({"mlflow": {"max_retries": 1.5}}, "config.mlflow.max_retries must be int"),
        (
            {"benchmark_config": {"stale_running_after_s": -5}},
            "benchmark_config.stale_running_after_s must be a positive number",
        ),
    ]:
        _expect_error(tiny_raw_config(tmp_path, **overrides), fragment)


LONG = "b" * 300
ARABIC_INDIC_THREE = "\u0663"
ZERO_WIDTH_SPACE = "\u200b"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"backbones": [LONG]}, ("config.backbones[] is 300 characters long; at most 96",)),
        ({"backbones": ["x" * 97]}, ("config.backbones[] is 97 characters long",)),
        ({"backbones": [f"bilstm{ARABIC_INDIC_THREE}"]}, ("config.backbones[]", "ASCII")),
        ({"backbones": [f"bil{ZERO_WIDTH_SPACE}stm"]}, ("config.backbones[]", "ASCII")),
        ({"environment": "e" * 97}, ("environment is 97 characters long",)),
        ({"environment": f"prod{ARABIC_INDIC_THREE}"}, ("environment", "ASCII")),
        ({"data_config": {"version": "v" * 80}}, ("data_config.version is 80 characters long; at most 79",)),
        ({"data_config": {"version": f"1{ARABIC_INDIC_THREE}"}}, ("data_config.version", "ASCII")),
    ],
)
def test_names_are_ascii_identity_components_of_at_most_96_characters(
    tmp_path: Path, tiny_raw_config: RawFactory, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    _expect_error(tiny_raw_config(tmp_path, **overrides), *fragments)


@pytest.mark.parametrize("variant", ["v" * 97, f"v{ARABIC_INDIC_THREE}", f"v1{ZERO_WIDTH_SPACE}"])
def test_variant_names_are_identity_components(tmp_path: Path, tiny_raw_config: RawFactory, variant: str) -> None:
    raw = tiny_raw_config(tmp_path)
    raw["hpo_config"]["variants"][variant] = raw["hpo_config"]["variants"].pop("v1")
    _expect_error(raw, f"hpo_config.variants.{variant}")


def test_longest_names_are_accepted(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    config = config_from_dict(
        tiny_raw_config(tmp_path, backbones=["x" * 96], environment="e" * 96, data_config={"version": "v" * 79}), env={}
    )
    assert config.backbones == ("x" * 96,)


def test_a_300_character_backbone_in_a_file_fails_at_load_naming_file_and_field(
    tmp_path: Path, tiny_raw_config: RawFactory
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(tmp_path, backbones=[LONG])), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"long\.yaml: config\.backbones\[\] is 300 characters long; at most 96 are allowed"
    ):
        load_config(path, env={})


def test_environment_override_is_checked_like_the_field(tmp_path: Path, tiny_raw_config: RawFactory) -> None:
    with pytest.raises(ConfigError, match="environment is 120 characters long"):
        config_from_dict(tiny_raw_config(tmp_path), env={"BENCHMARK_PIPELINE_ENVIRONMENT": "e" * 120})


def test_a_shared_deployment_with_a_local_mlflow_store_is_warned_about_at_load(
    tmp_path: Path, tiny_raw_config: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(tiny_raw_config(tmp_path, None, optuna={"storages": ["postgresql://optuna@db/optuna"]})),
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="benchmark_pipeline.config"):
        load_config(path, env={})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warned) == 1
        and "only this machine can read" in warned[0]
        and "--serve-artifacts" in warned[0]
        and str(path) in warned[0]
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="benchmark_pipeline.config"):
        load_config(path, env={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})  # a server: nothing to say
        load_config(env={})  # one machine, the demo: nothing to say
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]

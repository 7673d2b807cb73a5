"""The typed views a PipelineConfig holds: checked once, when it is built, beside the dicts as written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmark_pipeline.benchmarking.keys import compute_config_hash
from benchmark_pipeline.config import (
    BenchmarkConfig,
    ConfigError,
    config_from_dict,
    validate_benchmark_config,
    validate_objective,
)
from benchmark_pipeline_tests.tiny_config import deep_merge, tiny_config_dict


def test_typed_views_beside_the_dicts_as_written(tmp_path: Path) -> None:
    raw = deep_merge(tiny_config_dict(tmp_path), {"benchmark_config": {"min_duration_s": 0, "device": None}})
    config = config_from_dict(raw, env={})
    assert config.benchmark.device == "cpu" and config.benchmark.min_duration_s == 0.0
    assert config.benchmark.stale_running_after_s == 6 * 3600.0 and config.benchmark.pytorch.model_factory
    assert config.hpo.objective.direction == "maximize" and config.hpo.variant_names == ("v1", "v2")
    assert config.data.version == "1" and config.data.name == "synthetic-ner"
    # The hashes are computed from the dict as written (``0`` stays an int there), never from the model.
    assert config.benchmark.to_dict() == config.benchmark_config and "device" not in config.benchmark_config
    assert type(config.benchmark.to_dict()["min_duration_s"]) is int
    assert compute_config_hash(config.benchmark.to_dict()) == compute_config_hash(config.benchmark_config)


def test_a_checked_benchmark_config_passes_the_boundary_unchanged(tmp_path: Path) -> None:
    config = config_from_dict(tiny_config_dict(tmp_path), env={})
    assert validate_benchmark_config(config.benchmark) is config.benchmark
    checked = validate_benchmark_config(dict(config.benchmark_config))
    assert isinstance(checked, BenchmarkConfig) and checked == config.benchmark
    assert validate_objective({"objective": {"metric": "loss", "direction": "minimize"}, "variants": None}) == {
        "metric": "loss",
        "direction": "minimize",
    }
    with pytest.raises(ConfigError, match=r"benchmark_config\.iterations is required"):
        validate_benchmark_config({"batch_sizes": [1], "warmup": 0, "max_length": 8})


def test_replace_checks_the_new_sub_config(tmp_path: Path) -> None:
    config = config_from_dict(tiny_config_dict(tmp_path), env={})
    extended = replace(config, hpo_config={**config.hpo_config, "variants": {"v9": {}}})
    assert extended.variants == ("v9",)
    with pytest.raises(
        ConfigError, match=r"hpo_config\.objective\.direction must be one of \('maximize', 'minimize'\)"
    ):
        replace(config, hpo_config={"objective": {"metric": "m", "direction": "up"}})

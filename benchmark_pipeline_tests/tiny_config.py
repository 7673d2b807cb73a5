"""The suite's small pipeline config (2 backbones, 2 variants x 3 trials of 1 epoch, a 96/32/32 dataset), as a raw
dict, and the recursive merge tests use to vary it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TINY_BACKBONES = ("tiny_transformer", "bilstm")
TINY_VARIANTS = ("v1", "v2")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, recursively for mappings; an override of ``None`` removes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def unique_suffix() -> str:
    return uuid.uuid4().hex[:10]


def tiny_config_dict(root: Path | str, tracking_uri: str | None = None, suffix: str | None = None) -> dict[str, Any]:
    """A small, valid raw config: 2 backbones, 2 variants x 3 trials of 1 epoch, a 96/32/32 dataset.

    MLflow experiment names carry ``suffix`` (random by default) so each config gets its own experiments.
    """
    suffix = suffix or unique_suffix()
    return {
        "environment": "test",
        "root_dir": str(root),
        "backbones": list(TINY_BACKBONES),
        "mlflow": {
            "tracking_uri": tracking_uri,
            "hpo_experiment_prefix": f"hpo-{suffix}-",
            "benchmark_experiment": f"benchmarks-{suffix}",
        },
        "optuna": {"storages": []},
        "hpo_output_dir": None,
        "data_config": {
            "name": "synthetic-ner",
            "version": "1",
            "seed": 13,
            "vocab_size": 64,
            "max_length": 12,
            "train_size": 96,
            "validation_size": 32,
            "test_size": 32,
            "local_path": "outputs/data/synthetic-ner",
        },
        "hpo_config": {
            "objective": {"metric": "macro-f1", "direction": "maximize"},
            "seed": 7,
            "batch_size": 32,
            "variants": {
                "v1": {
                    "n_trials": 3,
                    "epochs": 1,
                    "search_space": {
                        "learning_rate": {"type": "float", "low": 0.003, "high": 0.03, "log": True},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.2},
                        "width": {"type": "categorical", "choices": [16, 32]},
                    },
                },
                "v2": {
                    "n_trials": 3,
                    "epochs": 1,
                    "search_space": {
                        "learning_rate": {"type": "float", "low": 0.01, "high": 0.05, "log": True},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.1},
                        "width": {"type": "categorical", "choices": [8, 24]},
                    },
                },
            },
        },
        "benchmark_config": {
            "backends": ["onnxruntime", "pytorch"],
            "test_data": "outputs/data/synthetic-ner/test.jsonl",
            "pytorch": {"model_factory": "benchmark_pipeline.demo.models:load_trial_model"},
            "device": "cpu",
            "batch_sizes": [1, 4],
            "max_length": 12,
            "warmup": 1,
            "iterations": 3,
            "min_duration_s": 0.0,
            "intra_op_threads": 1,
        },
    }

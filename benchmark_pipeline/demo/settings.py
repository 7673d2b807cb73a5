"""What the embedded demo needs of a config beyond what the core reads: the generator's ``data_config``
fields and, per HPO variant, ``n_trials``, ``epochs`` and a ``search_space``.

Retrieval and benchmarking never require these; only the demo's own assets and sweeps call
:func:`validate_demo_config`, so a team's config in the design document's shape loads without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark_pipeline.config import ConfigError, PipelineConfig, positive_int, require_field

#: The backbones the demo can train (the registry in :mod:`benchmark_pipeline.demo.models`, named here so
#: that checking a config imports no torch).
DEMO_BACKBONES = ("bilstm", "deep_transformer", "tiny_transformer")
#: data_config fields the demo's dataset generator reads (all integers).
DEMO_DATA_FIELDS = ("vocab_size", "max_length", "train_size", "validation_size", "test_size", "seed")


def validate_demo_data_config(data_config: Mapping[str, Any]) -> None:
    for key in DEMO_DATA_FIELDS:
        positive_int(data_config, key, "data_config", allow_zero=key == "seed")
    if data_config["vocab_size"] < 64:
        raise ConfigError(f"data_config.vocab_size must be >= 64, got {data_config['vocab_size']}")
    if data_config["max_length"] < 8:
        raise ConfigError(f"data_config.max_length must be >= 8, got {data_config['max_length']}")


def validate_search_space(space: Any, where: str) -> None:
    if not isinstance(space, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(space).__name__}")
    for param, spec in space.items():
        pwhere = f"{where}.{param}"
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{pwhere} must be a mapping with type float, int or categorical")
        if spec["type"] == "categorical":
            if not require_field(spec, "choices", pwhere, list):
                raise ConfigError(f"{pwhere}.choices must not be empty")
        else:
            low = require_field(spec, "low", pwhere, (int, float))
            high = require_field(spec, "high", pwhere, (int, float))
            if low > high:
                raise ConfigError(f"{pwhere}: low ({low}) must be <= high ({high})")


def validate_demo_hpo_config(hpo_config: Mapping[str, Any]) -> None:
    variants = hpo_config.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError("hpo_config.variants must name at least one variant for the embedded demo's sweeps")
    for name, variant in variants.items():
        where = f"hpo_config.variants.{name}"
        positive_int(variant, "n_trials", where)
        positive_int(variant, "epochs", where)
        validate_search_space(require_field(variant, "search_space", where, dict), f"{where}.search_space")


def validate_demo_config(config: PipelineConfig) -> PipelineConfig:
    """Raise :class:`ConfigError` naming the field unless ``config`` can drive the embedded demo."""
    unknown = [b for b in config.backbones if b not in DEMO_BACKBONES]
    if unknown:
        raise ConfigError(f"config.backbones {unknown} are not backbones of the embedded demo {list(DEMO_BACKBONES)}")
    validate_demo_data_config(config.data_config)
    validate_demo_hpo_config(config.hpo_config)
    return config


def is_demo_config(config: PipelineConfig) -> bool:
    """True when ``config`` can drive the embedded demo (so its assets belong in the code location)."""
    try:
        validate_demo_config(config)
    except ConfigError:
        return False
    return True

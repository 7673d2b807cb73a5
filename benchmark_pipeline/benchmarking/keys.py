"""The stable benchmark identity: ``backbone:variant:run_id:trial_id:data_fingerprint:benchmark_config_hash``.

Every component is restricted to ``[A-Za-z0-9._-]`` (and is neither ``.`` nor ``..``): ``:`` separates
components, a quote could not be matched by MLflow's filter language, and ``/`` could name a path. So a key
splits back into exactly six components, and two different component tuples never give the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchmark_pipeline.config import canonical_benchmark_config
from benchmark_pipeline.contract import DEFAULT_VARIANT

# MAX_COMPONENT_LENGTH is re-exported here for callers of the key API; its home is benchmark_pipeline.hashing.
from benchmark_pipeline.hashing import MAX_COMPONENT_LENGTH as MAX_COMPONENT_LENGTH
from benchmark_pipeline.hashing import config_hash, data_fingerprint, require_safe_component

KEY_SEPARATOR = ":"
UNKNOWN_RUN_ID = "unknown"


def compute_data_fingerprint(data_config: Mapping[str, Any]) -> str:
    """Dataset version + a hash of ``data_config`` without machine-local paths (see :mod:`benchmark_pipeline.hashing`)."""
    return data_fingerprint(data_config)


def compute_config_hash(benchmark_config: Mapping[str, Any]) -> str:
    """Hash of the *whole* benchmark config (batch sizes, iterations, warmup, max_length, device, backends, ...),
    after :func:`~benchmark_pipeline.config.canonical_benchmark_config` fills in defaults."""
    return config_hash(canonical_benchmark_config(benchmark_config))


def _component(value: Any, name: str) -> str:
    # Characters and length (MAX_COMPONENT_LENGTH) are checked in one place: hashing.require_safe_component.
    return require_safe_component(value, name)


def build_benchmark_key(
    backbone: str,
    variant: str | None,
    run_id: str | None,
    trial_id: str,
    data_config: Mapping[str, Any],
    benchmark_config: Mapping[str, Any],
) -> str:
    """Build the stable benchmark identity key.

    ``variant`` defaults to ``"default"`` and ``run_id`` to ``"unknown"`` when ``None`` or empty. Raises
    ``ValueError`` naming the component when any is outside ``[A-Za-z0-9._-]``, is ``.``/``..``, or is too long.
    """
    parts = [
        _component(backbone, "backbone"),
        _component(variant or DEFAULT_VARIANT, "variant"),
        _component(run_id or UNKNOWN_RUN_ID, "run_id"),
        _component(trial_id, "trial_id"),
        _component(compute_data_fingerprint(data_config), "data_fingerprint"),
        _component(compute_config_hash(benchmark_config), "benchmark_config_hash"),
    ]
    return KEY_SEPARATOR.join(parts)


@dataclass(frozen=True)
class BenchmarkKeyParts:
    backbone: str
    variant: str
    run_id: str
    trial_id: str
    data_fingerprint: str
    benchmark_config_hash: str


def parse_benchmark_key(key: str) -> BenchmarkKeyParts:
    """Split a key into its six components, validating each; ``ValueError`` for anything else."""
    if not isinstance(key, str):
        raise ValueError(f"a benchmark key must be a string, got {type(key).__name__}")
    parts = key.split(KEY_SEPARATOR)
    if len(parts) != 6:
        raise ValueError(f"a benchmark key has 6 ':'-separated components, got {len(parts)} in {key!r}")
    names = ("backbone", "variant", "run_id", "trial_id", "data_fingerprint", "benchmark_config_hash")
    return BenchmarkKeyParts(*(_component(part, name) for part, name in zip(parts, names, strict=True)))


def key_for_trial(
    trial_info: Mapping[str, Any], data_config: Mapping[str, Any], benchmark_config: Mapping[str, Any]
) -> str:
    """The key of one ``trial_info`` from ``retrieve_best_trials`` (identical whichever source retrieved it)."""
    return build_benchmark_key(
        trial_info["backbone"],
        trial_info.get("variant"),
        trial_info.get("run_id"),
        trial_info["trial_id"],
        data_config,
        benchmark_config,
    )

"""Canonical JSON and every hash the project computes.

All identities (study and trial keys, data fingerprints, benchmark config hashes) are SHA-256 digests of
*canonical JSON*, so the same inputs give the same hash in any process, on any machine, with any Python
version:

* object keys are sorted, separators are ``","`` and ``":"`` with no whitespace, output is ASCII only;
* integers are spelled as integers and floats with Python's shortest round-trip ``repr`` (``0.1`` is
  ``0.1``, ``1.0`` is ``1.0``); so ``1`` and ``1.0`` hash differently: write configs with one spelling;
* booleans and ``null`` are JSON's; tuples are lists;
* NaN and infinities are rejected (JSON has no spelling for them), as are non-string keys and any other
  type (paths included: a machine-local path must never reach a hash).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Characters allowed in every identity component (benchmark key parts, variant and backbone names).
#: ``\Z``, not ``$``: ``$`` also matches before a trailing newline, which would let ``"name\n"`` through.
#: Explicit ASCII ranges, never ``\d`` or ``\w``: on ``str`` patterns those match any Unicode digit or letter
#: (``"v\u0663"``, an Arabic-Indic three, matches ``v\d``).
SAFE_COMPONENT_PATTERN = re.compile(r"^[A-Za-z0-9._-]+\Z")
#: Longest identity component accepted (backbone, variant, run id, trial id, environment ...). Six of them can
#: exceed a 255-byte file name; the disk cache names such keys by their digest
#: (:func:`benchmark_pipeline.benchmarking.cache.cache_path`), and a name longer than this is refused at config load.
MAX_COMPONENT_LENGTH = 96
#: ``data_fingerprint`` is ``{version}-{hash16}`` and is itself a key component, so the version leaves room for
#: the 17 characters of ``-{hash16}``.
MAX_DATA_VERSION_LENGTH = MAX_COMPONENT_LENGTH - 17

#: HPO config fields that control *how much* to search, not *what* is searched. Extending a sweep from
#: 6 to 12 trials must keep the same study identity, so these never enter the study key.
VOLATILE_HPO_FIELDS = frozenset({"n_trials", "timeout_s"})

#: data_config fields that are machine-local and must not change the data fingerprint.
MACHINE_LOCAL_DATA_FIELDS = frozenset({"local_path"})


def _normalize(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash non-finite number {value!r} at {where}")
        return value
    if isinstance(value, Mapping):
        normalized = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"cannot hash non-string key {key!r} at {where}")
            normalized[key] = _normalize(item, f"{where}.{key}")
        return normalized
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray, memoryview)):
        return [_normalize(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise ValueError(f"cannot hash value of type {type(value).__name__} at {where}: {value!r}")


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (see the module docstring for the rules)."""
    return json.dumps(_normalize(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_hex(value: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def is_safe_component(value: Any, max_length: int = MAX_COMPONENT_LENGTH) -> bool:
    """True for a non-empty string of ``[A-Za-z0-9._-]``, not ``.`` or ``..``, at most ``max_length`` long."""
    return (
        isinstance(value, str)
        and bool(SAFE_COMPONENT_PATTERN.match(value))
        and value not in {".", ".."}
        and len(value) <= max_length
    )


def safe_component_problem(value: Any, max_length: int = MAX_COMPONENT_LENGTH) -> str | None:
    """Why ``value`` is not a safe identity component, as words that follow its name; ``None`` when it is one."""
    if is_safe_component(value, max_length):
        return None
    if isinstance(value, str) and SAFE_COMPONENT_PATTERN.match(value) and value not in {".", ".."}:
        return f"is {len(value)} characters long; at most {max_length} are allowed: {value[:40]!r}..."
    return f"must be a non-empty string of ASCII letters, digits, '.', '_' or '-' (and not '.' or '..'), got {value!r}"


def require_safe_component(value: Any, name: str, max_length: int = MAX_COMPONENT_LENGTH) -> str:
    """Return ``value`` if :func:`is_safe_component`, else raise ``ValueError`` naming ``name``.

    ``:`` separates benchmark key components and MLflow's filter language cannot match a tag value that
    holds a quote, so identities never contain either; ``.`` alone and ``..`` are refused too, since
    they name folders; and a component is at most ``max_length`` characters, so that the paths and
    file names built from it stay within the file system's limits.
    """
    problem = safe_component_problem(value, max_length)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return str(value)  # a str already (is_safe_component checked it)


def data_fingerprint(data_config: Mapping[str, Any]) -> str:
    """``"{version}-{hash16}"``: the dataset version plus a hash of ``data_config`` without machine-local paths.

    Raises ``ValueError`` when ``version`` is missing, not a safe component, or longer than
    :data:`MAX_DATA_VERSION_LENGTH` (the fingerprint is a benchmark key component).
    """
    if "version" not in data_config:
        raise ValueError("data_config.version is required to fingerprint the dataset")
    version = require_safe_component(str(data_config["version"]), "data_config.version", MAX_DATA_VERSION_LENGTH)
    portable = {k: v for k, v in data_config.items() if k not in MACHINE_LOCAL_DATA_FIELDS}
    return f"{version}-{sha256_hex(portable)[:16]}"


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the whole config's canonical JSON."""
    return sha256_hex(dict(config))[:16]


def study_key_hash(
    backbone: str, variant: str, data_fp: str, variant_config: Mapping[str, Any], objective: Mapping[str, Any]
) -> str:
    """Identity of one Optuna study: backbone, variant, data fingerprint, objective and the variant's
    HPO settings without :data:`VOLATILE_HPO_FIELDS`."""
    settings = {k: v for k, v in variant_config.items() if k not in VOLATILE_HPO_FIELDS}
    return sha256_hex(
        {
            "schema": "study/v1",
            "backbone": backbone,
            "variant": variant,
            "data_fingerprint": data_fp,
            "objective": dict(objective),
            "hpo": settings,
        }
    )


def trial_key_hash(study_key: str, hyperparameters: Mapping[str, Any]) -> str:
    """Identity of one trial: its study key plus its hyperparameters."""
    return sha256_hex({"schema": "trial/v1", "study_key_hash": study_key, "hyperparameters": dict(hyperparameters)})

"""The disk cache: one JSON file per benchmark key under ``{root}/outputs/benchmarking/{environment}/cache/``.

* File names come from the key injectively and safely: ``benchmark_`` + the key with ``:`` spelled ``+``
  (``+`` is outside the component alphabet, and a validated key has no ``/``), + ``.json``. A key too long
  for one file name (most file systems allow 255 bytes) is named by its SHA-256 instead: ``benchmark_sha256-``
  + 64 hex digits + ``.json``, which holds no ``+`` and so never equals a readable name.
* Files are written atomically (temporary file in the same folder, ``fsync``, ``os.replace``), so a file
  that exists always holds a complete result.
* A file is trusted only when it is a regular file (a symbolic link is never followed: it could point
  anywhere), parses, has the complete schema, and both its top-level key and its result's key equal the key
  its name says; anything else is reported and ignored (so that key is benchmarked again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark_pipeline.benchmarking.keys import KEY_SEPARATOR, parse_benchmark_key
from benchmark_pipeline.layout import Layout

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
#: Longest cache file name written as the readable key; longer keys are named by their digest.
MAX_FILE_NAME_LENGTH = 255


def cache_dir(root_dir: Path, environment: str) -> Path:
    return Layout(Path(root_dir), environment).benchmark_cache_dir


def cache_path(cache_directory: Path, benchmark_key: str) -> Path:
    """Path of the cache file for ``benchmark_key``; the key is validated first, so it cannot leave the folder."""
    parse_benchmark_key(benchmark_key)
    name = f"benchmark_{benchmark_key.replace(KEY_SEPARATOR, '+')}.json"
    if len(name) > MAX_FILE_NAME_LENGTH:
        name = f"benchmark_sha256-{hashlib.sha256(benchmark_key.encode('ascii')).hexdigest()}.json"
    return cache_directory / name


#: What a cached result must hold to be trusted (the fields ``BenchmarkResult`` always writes).
REQUIRED_RESULT_FIELDS = (
    "benchmark_key",
    "backbone",
    "variant",
    "trial_id",
    "benchmark_config",
    "measurements",
    "quality",
    "environment",
)
REQUIRED_MEASUREMENT_FIELDS = (
    "backend",
    "batch_size",
    "provider",
    "count",
    "p50_ms",
    "p95_ms",
    "throughput_samples_per_s",
)


def load_cache_file(path: Path) -> Any:
    """The parsed JSON of ``path``, opened without following a symbolic link; ``None`` when absent.

    Raises ``ValueError`` naming the file when it is a link, unreadable or not JSON.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        kind = "a symbolic link (never followed)" if path.is_symlink() else f"unreadable ({error})"
        raise ValueError(f"benchmark cache file {path} is {kind}") from None
    try:
        with os.fdopen(descriptor, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"benchmark cache file {path} is unreadable ({type(error).__name__}: {error})") from None


def schema_problem(payload: Any, benchmark_key: str) -> str | None:
    """Why ``payload`` is not a complete cache entry of ``benchmark_key`` (``None``: it is)."""
    if not isinstance(payload, dict):
        return f"top level is {type(payload).__name__}, not an object"
    if payload.get("benchmark_key") != benchmark_key:
        return f"holds key {payload.get('benchmark_key')!r}, not {benchmark_key!r}"
    mlflow = payload.get("mlflow")
    if not isinstance(mlflow, dict) or not isinstance(mlflow.get("logged"), bool):
        return "has no mlflow.logged flag"
    result = payload.get("result")
    if not isinstance(result, dict):
        return "has no result object"
    missing = [name for name in REQUIRED_RESULT_FIELDS if name not in result]
    if missing:
        return f"result lacks {missing}"
    if result["benchmark_key"] != benchmark_key:
        return f"result is of key {result['benchmark_key']!r}, not {benchmark_key!r}"
    measurements = result["measurements"]
    if not isinstance(measurements, list) or not measurements:
        return "result has no measurements"
    for index, measurement in enumerate(measurements):
        if not isinstance(measurement, dict) or any(name not in measurement for name in REQUIRED_MEASUREMENT_FIELDS):
            return f"measurement {index} lacks one of {list(REQUIRED_MEASUREMENT_FIELDS)}"
    return None


def trusted_entry(path: Path, benchmark_key: str, payload: Any) -> dict[str, Any] | None:
    """``payload`` when it is a complete entry of ``benchmark_key``; else ``None``, with a WARNING naming the file."""
    problem = schema_problem(payload, benchmark_key)
    if problem is not None:
        logger.warning("benchmark cache file %s %s; not trusted", path, problem)
        return None
    return payload  # type: ignore[no-any-return]


def read_cache_entry(cache_directory: Path, benchmark_key: str) -> dict[str, Any] | None:
    """The cached payload for ``benchmark_key``, or ``None`` when absent, a link, corrupt, incomplete or of
    another key (all but absent are logged with the file's path)."""
    path = cache_path(cache_directory, benchmark_key)
    try:
        payload = load_cache_file(path)
    except ValueError as error:
        logger.warning("%s; not trusted", error)
        return None
    return None if payload is None else trusted_entry(path, benchmark_key, payload)


def write_cache_entry(
    cache_directory: Path, benchmark_key: str, result: Mapping[str, Any], mlflow_run_id: str | None, mlflow_logged: bool
) -> Path:
    """Atomically write the result for ``benchmark_key``; returns the file's path."""
    path = cache_path(cache_directory, benchmark_key)
    cache_directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema_version": CACHE_SCHEMA_VERSION,
        "benchmark_key": benchmark_key,
        "mlflow": {"run_id": mlflow_run_id, "logged": mlflow_logged},
        "result": dict(result),
    }
    descriptor, temporary = tempfile.mkstemp(prefix=".benchmark_", suffix=".tmp", dir=cache_directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path

"""The disk cache: one JSON file per benchmark key under ``{root}/outputs/benchmarking/{environment}/cache/``.

* File names come from the key injectively and safely: ``benchmark_`` + the key with ``:`` spelled ``+``
  (``+`` is outside the component alphabet, and a validated key has no ``/``), + ``.json``. A key too long
  for one file name (most file systems allow 255 bytes) is named by its SHA-256 instead: ``benchmark_sha256-``
  + 64 hex digits + ``.json``, which holds no ``+`` and so never equals a readable name.
* Files are written atomically (temporary file in the same folder, ``fsync``, ``os.replace``), so a file
  that exists always holds a complete result.
* A file is trusted only when it parses and holds the same key; anything else is reported and ignored.
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

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
#: Longest cache file name written as the readable key; longer keys are named by their digest.
MAX_FILE_NAME_LENGTH = 255


def cache_dir(root_dir: Path, environment: str) -> Path:
    return Path(root_dir) / "outputs" / "benchmarking" / environment / "cache"


def cache_path(cache_directory: Path, benchmark_key: str) -> Path:
    """Path of the cache file for ``benchmark_key``; the key is validated first, so it cannot leave the folder."""
    parse_benchmark_key(benchmark_key)
    name = f"benchmark_{benchmark_key.replace(KEY_SEPARATOR, '+')}.json"
    if len(name) > MAX_FILE_NAME_LENGTH:
        name = f"benchmark_sha256-{hashlib.sha256(benchmark_key.encode('ascii')).hexdigest()}.json"
    return cache_directory / name


def read_cache_entry(cache_directory: Path, benchmark_key: str) -> dict[str, Any] | None:
    """The cached payload for ``benchmark_key``, or ``None`` when absent, corrupt or holding another key."""
    path = cache_path(cache_directory, benchmark_key)
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("benchmark cache file %s is unreadable (%s); not trusted", path, error)
        return None
    if not isinstance(payload, dict) or payload.get("benchmark_key") != benchmark_key or "result" not in payload:
        found = payload.get("benchmark_key") if isinstance(payload, dict) else None
        logger.warning("benchmark cache file %s holds key %r, not %r; not trusted", path, found, benchmark_key)
        return None
    return payload


def write_cache_entry(cache_directory: Path, benchmark_key: str, result: Mapping[str, Any], mlflow_run_id: str | None, mlflow_logged: bool) -> Path:
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

"""The pipeline configuration: one YAML file, loaded into typed records; errors name the field.

Deployment values may be overridden by environment variables, so one file serves every machine:

* ``BENCHMARK_PIPELINE_CONFIG``: the YAML file (default: the embedded demo config);
* ``BENCHMARK_PIPELINE_ROOT``: ``root_dir``;
* ``MLFLOW_TRACKING_URI``: ``mlflow.tracking_uri``;
* ``BENCHMARK_PIPELINE_HPO_DIR``: ``hpo_output_dir``;
* ``BENCHMARK_PIPELINE_ENVIRONMENT``: ``environment``.

``data_config``, ``hpo_config`` and ``benchmark_config`` stay plain dicts, since the public API
(``retrieve_best_trials``, ``build_benchmark_key`` ...) takes them as dicts; :func:`load_config` checks their
shape once so later code can trust them. Only what retrieval and benchmarking read is required; the
embedded demo checks the fields its generator and sweeps read itself (:mod:`benchmark_pipeline.demo.settings`).

Input limits (a config is small, plain data; anything else is refused before it is parsed or hashed):

* at most :data:`MAX_CONFIG_BYTES` bytes and :data:`MAX_CONFIG_DEPTH` levels of nesting;
* no YAML anchors or aliases (``&a``, ``*a``, ``<<: *a``): nine levels of nine aliases load in milliseconds
  and then expand to 9**9 values once hashed (the "billion laughs" document);
* no unknown keys at the top level, in ``mlflow``, ``optuna``, ``benchmark_config`` and
  ``hpo_config.objective``: a misspelt key would otherwise be silently ignored (the error suggests the
  nearest valid key). ``data_config`` and the rest of ``hpo_config`` are the user's own, free-form fields
  (hashed into the data fingerprint and the study key);
* names (backbones, variants, the environment, ``data_config.version``) are identity components:
  ``[A-Za-z0-9._-]``, ASCII only, at most :data:`~benchmark_pipeline.hashing.MAX_COMPONENT_LENGTH` characters
  (see :func:`benchmark_pipeline.hashing.require_safe_component`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from benchmark_pipeline.hashing import MAX_DATA_VERSION_LENGTH, require_safe_component

logger = logging.getLogger(__name__)

DEMO_CONFIG_RESOURCE = "configs/demo.yaml"
#: Largest config file read, in bytes. A pipeline config is a few KiB; the bound keeps a runaway or hostile
#: file from being parsed and hashed.
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of mappings and lists in a config file (the demo config nests 5 levels deep). PyYAML
#: composes nodes recursively, so a file of 100,000 ``[`` would otherwise end in a RecursionError.
MAX_CONFIG_DEPTH = 32

#: Keys each checked section accepts; anything else is a :class:`ConfigError` naming the key.
TOP_LEVEL_KEYS = (
    "environment", "root_dir", "backbones", "mlflow", "optuna", "hpo_output_dir", "data_config", "hpo_config", "benchmark_config",
)  # fmt: skip
MLFLOW_KEYS = ("tracking_uri", "hpo_experiment_prefix", "benchmark_experiment", "timeout_s", "max_retries")
OPTUNA_KEYS = ("storages", "sweep_storage")
OBJECTIVE_KEYS = ("metric", "direction")
BENCHMARK_CONFIG_KEYS = (
    "batch_sizes", "iterations", "warmup", "max_length", "device", "min_duration_s", "intra_op_threads", "backends",
    "test_data", "task", "output_tolerance", "synthetic_int_high", "pytorch", "stale_running_after_s",
)  # fmt: skip
PYTORCH_KEYS = ("model_factory",)
_DIRECTIONS = ("maximize", "minimize")
_DEVICES = ("cpu", "cuda", "auto")
_BACKENDS = ("onnxruntime", "pytorch")


#: Bounds of every MLflow HTTP call unless ``mlflow.timeout_s`` / ``mlflow.max_retries`` say otherwise
#: (applied by :func:`benchmark_pipeline.tracking.configure_http`).
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 2


class ConfigError(ValueError):
    """A configuration value is missing or has the wrong type or value; the message names the field."""


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    hpo_experiment_prefix: str = "hpo-"
    benchmark_experiment: str = "benchmarks"
    #: Bounds of every MLflow HTTP call, and how long ``/health`` may take before MLflow counts as down.
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    def hpo_experiment_name(self, backbone: str) -> str:
        return f"{self.hpo_experiment_prefix}{backbone}"


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one deployment of the pipeline needs to know."""

    root_dir: Path
    environment: str
    backbones: tuple[str, ...]
    mlflow: MlflowSettings
    hpo_output_dir: Path
    data_config: dict[str, Any]
    hpo_config: dict[str, Any]
    benchmark_config: dict[str, Any]
    optuna_storages: tuple[str, ...] = ()
    source_path: str = field(default="<dict>", compare=False)
    #: ``optuna.sweep_storage``: where the embedded demo's sweeps keep their studies (an Optuna storage URL,
    #: e.g. a team's Postgres); ``None``: a sqlite ``study.db`` per study folder. Retrieval reads it too.
    optuna_sweep_storage: str | None = None

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(sorted(self.hpo_config.get("variants") or {}))

    @property
    def objective(self) -> dict[str, str]:
        return dict(self.hpo_config["objective"])

    def hpo_experiments(self, backbones: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """``{backbone: {"name": ...}}`` as ``retrieve_best_trials`` takes it (ids are resolved by name),
        for ``backbones`` (default: the configured ones)."""
        return {
            b: {"name": self.mlflow.hpo_experiment_name(b)}
            for b in (self.backbones if backbones is None else backbones)
        }

    def selection_config(self) -> dict[str, Any]:
        """The ``selection_config`` argument of ``retrieve_best_trials`` for this deployment."""
        return {
            "tracking_uri": self.mlflow.tracking_uri,
            "hpo_output_dir": str(self.hpo_output_dir),
            "optuna_storages": list(self.optuna_storages)
            + (
                [self.optuna_sweep_storage]
                if self.optuna_sweep_storage and self.optuna_sweep_storage not in self.optuna_storages
                else []
            ),
            "mlflow_timeout_s": self.mlflow.timeout_s,
        }

    def benchmark_experiment(self) -> dict[str, str]:
        return {"name": self.mlflow.benchmark_experiment}


def reject_unknown_keys(mapping: Mapping[Any, Any], allowed: Iterable[str], where: str) -> None:
    """Raise a :class:`ConfigError` for the first key of ``mapping`` not in ``allowed``, naming it and
    suggesting the nearest valid key."""
    valid = tuple(allowed)
    for key in mapping:
        if key in valid:
            continue
        nearest = difflib.get_close_matches(str(key), valid, n=1)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        raise ConfigError(f"{where} has an unknown key {key!r}{hint} (valid keys: {', '.join(valid)})")


def require_field(mapping: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}.{key} is required")
    value = mapping[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key} must be {expected}, got {type(value).__name__} {value!r}")
    return value


def positive_int(mapping: Mapping[str, Any], key: str, where: str, *, allow_zero: bool = False) -> int:
    value = require_field(mapping, key, where, int)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}.{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value)


def validate_objective(hpo_config: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{"metric", "direction"}`` from ``hpo_config["objective"]`` (direction defaults to maximize)."""
    objective = require_field(hpo_config, "objective", "hpo_config", dict)
    # A misspelt "direction" would silently maximize.
    reject_unknown_keys(objective, OBJECTIVE_KEYS, "hpo_config.objective")
    metric = require_field(objective, "metric", "hpo_config.objective", str)
    direction = objective.get("direction", "maximize")
    if direction not in _DIRECTIONS:
        raise ConfigError(f"hpo_config.objective.direction must be one of {_DIRECTIONS}, got {direction!r}")
    return {"metric": metric, "direction": direction}


def _safe_name(value: Any, where: str, max_length: int | None = None) -> str:
    """A name that becomes an identity component (see :func:`~benchmark_pipeline.hashing.require_safe_component`)."""
    try:
        return (
            require_safe_component(value, where)
            if max_length is None
            else require_safe_component(value, where, max_length)
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def validate_data_config(data_config: Any) -> dict[str, Any]:
    """The core needs only the dataset's ``name`` and ``version`` (its identity, with the rest hashed into the
    data fingerprint); fields the embedded demo's generator reads are checked by the demo's own assets."""
    if not isinstance(data_config, dict):
        raise ConfigError(f"data_config must be a mapping, got {type(data_config).__name__}")
    require_field(data_config, "name", "data_config", str)
    if "version" not in data_config:
        raise ConfigError("data_config.version is required")
    # The version heads the data fingerprint, itself a benchmark key component: room is left for "-{hash16}".
    _safe_name(str(data_config["version"]), "data_config.version", MAX_DATA_VERSION_LENGTH)
    return data_config


def validate_hpo_config(hpo_config: Any) -> dict[str, Any]:
    """The core needs the ``objective``; ``variants``, when given, names the HPO variants (search spaces and
    trial counts inside them are the HPO code's business: the demo checks its own)."""
    if not isinstance(hpo_config, dict):
        raise ConfigError(f"hpo_config must be a mapping, got {type(hpo_config).__name__}")
    validate_objective(hpo_config)
    variants = hpo_config.get("variants", {})
    if not isinstance(variants, dict):
        raise ConfigError(
            f"hpo_config.variants must be a mapping of variant name to settings, got {type(variants).__name__}"
        )
    for name, variant in variants.items():
        where = f"hpo_config.variants.{name}"
        _safe_name(name, where)
        if not isinstance(variant, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(variant).__name__}")
    return hpo_config


#: Values the benchmark uses when a field is left out; :func:`canonical_benchmark_config` writes them in, so
#: a config that omits a default and one that spells it out are the same benchmark (and the same key).
BENCHMARK_DEFAULTS: dict[str, Any] = {"device": "cpu", "min_duration_s": 0.0, "intra_op_threads": 1}
#: Defaults of fields added later: dropped from the canonical config when they hold their default, so that
#: the hash of every config written before they existed stays what it was.
OPTIONAL_BENCHMARK_DEFAULTS: dict[str, Any] = {"output_tolerance": 1e-3, "synthetic_int_high": 2, "pytorch": {}}
#: Fields that are not part of the benchmark's identity: where the test data lies on this machine (the data
#: is identified by ``data_config``'s fingerprint, as ``data_config.local_path`` is left out of it), and when
#: a RUNNING benchmark run is reported as stale (an operating choice, not a measurement setting).
NON_IDENTITY_BENCHMARK_FIELDS = frozenset({"test_data", "stale_running_after_s"})
#: Default of ``benchmark_config.stale_running_after_s``: a RUNNING benchmark run older than this is reported.
DEFAULT_STALE_RUNNING_AFTER_S = 6 * 3600.0
#: ``benchmark_config.task`` values with a built-in metric; anything else must be a ``module:function``.
BUILT_IN_TASKS = ("token-classification", "sequence-classification")
_IMPORT_STRING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*\Z")


def canonical_benchmark_config(benchmark_config: Mapping[str, Any]) -> dict[str, Any]:
    """``benchmark_config`` as hashed: defaults filled in, ``min_duration_s`` as a float (``0`` ≡ ``0.0``),
    later optional fields left out when at their default, machine-local and operational fields left out."""
    canonical = {**BENCHMARK_DEFAULTS, **benchmark_config}
    if isinstance(canonical["min_duration_s"], int) and not isinstance(canonical["min_duration_s"], bool):
        canonical["min_duration_s"] = float(canonical["min_duration_s"])
    for name, default in OPTIONAL_BENCHMARK_DEFAULTS.items():
        if name in canonical and canonical[name] == default:
            del canonical[name]
    return {k: v for k, v in canonical.items() if k not in NON_IDENTITY_BENCHMARK_FIELDS}


def _number(mapping: Mapping[str, Any], key: str, where: str, default: float, *, minimum: float = 0.0) -> float:
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"{where}.{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _positive_number(mapping: Mapping[str, Any], key: str, where: str) -> None:
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigError(f"{where}.{key} must be a positive number, got {value!r}")


def validate_import_string(value: Any, where: str) -> str:
    """``"package.module:function"``, else a :class:`ConfigError` naming ``where``."""
    if not isinstance(value, str) or not _IMPORT_STRING.match(value):
        raise ConfigError(f"{where} must be an import string 'package.module:function', got {value!r}")
    return value


def validate_benchmark_config(benchmark_config: Any) -> dict[str, Any]:
    """Check a benchmark config (the design document's ``batch_sizes, iterations, warmup, max_length, device``
    plus optional fields, see ``docs/benchmarking.md``); every error names the field."""
    if not isinstance(benchmark_config, dict):
        raise ConfigError(f"benchmark_config must be a mapping, got {type(benchmark_config).__name__}")
    where = "benchmark_config"
    reject_unknown_keys(benchmark_config, BENCHMARK_CONFIG_KEYS, where)
    batch_sizes = require_field(benchmark_config, "batch_sizes", where, list)
    if not batch_sizes:
        raise ConfigError(f"{where}.batch_sizes must not be empty")
    for size in batch_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{where}.batch_sizes must hold positive integers, got {size!r}")
    positive_int(benchmark_config, "max_length", where)
    positive_int(benchmark_config, "warmup", where, allow_zero=True)
    positive_int(benchmark_config, "iterations", where)
    _number(benchmark_config, "min_duration_s", where, 0.0)
    device = benchmark_config.get("device", "cpu")
    if device not in _DEVICES:
        raise ConfigError(f"{where}.device must be one of {_DEVICES}, got {device!r}")
    if "backends" in benchmark_config:
        backends = benchmark_config["backends"]
        if not isinstance(backends, list) or not backends or any(b not in _BACKENDS for b in backends):
            raise ConfigError(
                f"{where}.backends must be a non-empty list drawn from {_BACKENDS} (or left out: every backend "
                f"the trial has a model file for), got {backends!r}"
            )
    threads = benchmark_config.get("intra_op_threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"{where}.intra_op_threads must be an integer >= 0 (0: library default), got {threads!r}")
    if "test_data" in benchmark_config and not isinstance(benchmark_config["test_data"], str):
        raise ConfigError(
            f"{where}.test_data must be the path of a .npz or .jsonl file, got {benchmark_config['test_data']!r}"
        )
    _number(benchmark_config, "output_tolerance", where, OPTIONAL_BENCHMARK_DEFAULTS["output_tolerance"])
    int_high = benchmark_config.get("synthetic_int_high", OPTIONAL_BENCHMARK_DEFAULTS["synthetic_int_high"])
    if isinstance(int_high, bool) or not isinstance(int_high, int) or int_high < 1:
        raise ConfigError(f"{where}.synthetic_int_high must be an integer >= 1, got {int_high!r}")
    task = benchmark_config.get("task")
    if task is not None and task not in BUILT_IN_TASKS:
        validate_import_string(task, f"{where}.task (one of {BUILT_IN_TASKS}, or a metric)")
    pytorch = benchmark_config.get("pytorch", {})
    if not isinstance(pytorch, dict):
        raise ConfigError(f"{where}.pytorch must be a mapping, got {type(pytorch).__name__}")
    unknown = sorted(set(pytorch) - set(PYTORCH_KEYS), key=str)
    if unknown:
        raise ConfigError(f"{where}.pytorch has unknown key(s) {unknown}; the only key is 'model_factory'")
    if "model_factory" in pytorch:
        validate_import_string(pytorch["model_factory"], f"{where}.pytorch.model_factory")
    if "stale_running_after_s" in benchmark_config:
        _positive_number(benchmark_config, "stale_running_after_s", where)
    return benchmark_config


def resolve_test_data(benchmark_config: Mapping[str, Any], root_dir: Path) -> Path | None:
    """``benchmark_config.test_data`` as a path (relative to ``root_dir``), or ``None`` when not configured."""
    value = benchmark_config.get("test_data")
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(root_dir) / path


def _resolve(path_value: str | None, root: Path, default: Path) -> Path:
    if path_value is None:
        return default
    path = Path(path_value).expanduser()
    return path if path.is_absolute() else root / path


def config_from_dict(raw: Any, *, source_path: str = "<dict>", env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from parsed YAML, applying environment overrides from ``env``."""
    env = os.environ if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError(f"{source_path}: the top level must be a mapping, got {type(raw).__name__}")
    reject_unknown_keys(raw, TOP_LEVEL_KEYS, "config")
    root = Path(env.get("BENCHMARK_PIPELINE_ROOT") or raw.get("root_dir") or ".").expanduser().resolve()
    environment = env.get("BENCHMARK_PIPELINE_ENVIRONMENT") or require_field(raw, "environment", "config", str)
    _safe_name(environment, "environment")
    backbones = require_field(raw, "backbones", "config", list)
    if not backbones:
        raise ConfigError("config.backbones must name at least one backbone")
    for backbone in backbones:
        _safe_name(backbone, "config.backbones[]")
    if len(set(backbones)) != len(backbones):
        raise ConfigError(f"config.backbones has duplicates: {backbones}")

    mlflow_raw = raw.get("mlflow") or {}
    if not isinstance(mlflow_raw, dict):
        raise ConfigError(f"config.mlflow must be a mapping, got {type(mlflow_raw).__name__}")
    reject_unknown_keys(mlflow_raw, MLFLOW_KEYS, "config.mlflow")
    if mlflow_raw.get("timeout_s") is not None:
        _positive_number(mlflow_raw, "timeout_s", "config.mlflow")
    if mlflow_raw.get("max_retries") is not None:
        positive_int(mlflow_raw, "max_retries", "config.mlflow", allow_zero=True)
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or mlflow_raw.get("tracking_uri")
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{root / 'outputs' / 'mlflow' / 'mlflow.db'}"
    if not isinstance(tracking_uri, str):
        raise ConfigError(f"config.mlflow.tracking_uri must be a string, got {tracking_uri!r}")
    mlflow_settings = MlflowSettings(
        tracking_uri=tracking_uri,
        hpo_experiment_prefix=str(mlflow_raw.get("hpo_experiment_prefix", "hpo-")),
        benchmark_experiment=str(mlflow_raw.get("benchmark_experiment", "benchmarks")),
        timeout_s=float(mlflow_raw.get("timeout_s") or DEFAULT_TIMEOUT_S),  # checked above
        max_retries=int(mlflow_raw["max_retries"])
        if mlflow_raw.get("max_retries") is not None
        else DEFAULT_MAX_RETRIES,
    )

    optuna_raw = raw.get("optuna") or {}
    if isinstance(optuna_raw, dict):
        reject_unknown_keys(optuna_raw, OPTUNA_KEYS, "config.optuna")
    storages = optuna_raw.get("storages") or [] if isinstance(optuna_raw, dict) else None
    if not isinstance(storages, list) or not all(isinstance(s, str) for s in storages):
        raise ConfigError("config.optuna.storages must be a list of Optuna storage URLs")
    sweep_storage = optuna_raw.get("sweep_storage") if isinstance(optuna_raw, dict) else None
    if sweep_storage is not None and (not isinstance(sweep_storage, str) or "://" not in sweep_storage):
        raise ConfigError(
            f"config.optuna.sweep_storage must be an Optuna storage URL (e.g. postgresql://host/db) or null, got {sweep_storage!r}"
        )

    data_config = validate_data_config(raw.get("data_config"))
    hpo_config = validate_hpo_config(raw.get("hpo_config"))
    benchmark_config = validate_benchmark_config(raw.get("benchmark_config"))
    hpo_dir = env.get("BENCHMARK_PIPELINE_HPO_DIR") or raw.get("hpo_output_dir")
    return PipelineConfig(
        root_dir=root,
        environment=environment,
        backbones=tuple(backbones),
        mlflow=mlflow_settings,
        hpo_output_dir=_resolve(hpo_dir, root, root / "outputs" / "hpo" / environment),
        data_config=data_config,
        hpo_config=hpo_config,
        benchmark_config=benchmark_config,
        optuna_storages=tuple(storages),
        source_path=source_path,
        optuna_sweep_storage=sweep_storage,
    )


class _RefusedYaml(yaml.YAMLError):
    """A construct the config loader refuses (an anchor, an alias, too deep a nesting); the message says which."""


class ConfigYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases and nesting deeper than :data:`MAX_CONFIG_DEPTH`.

    Checked while composing, before anything is constructed: an alias bomb is refused at its first anchor.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _RefusedYaml(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases ('&name', '*name', '<<: *name') are not "
                "allowed in a pipeline config; write each value out (a file written by yaml.dump from Python objects "
                "that share a list or mapping gets them: copy the objects first)"
            )
        self._depth += 1
        if self._depth > MAX_CONFIG_DEPTH:
            raise _RefusedYaml(f"line {event.start_mark.line + 1}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_config_text(data: bytes, source: str) -> Any:
    """Parse a config file's bytes with the limits above; every error is a :class:`ConfigError` naming ``source``."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source} is larger than {MAX_CONFIG_BYTES} bytes (MAX_CONFIG_BYTES); a pipeline config is a few KiB"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source} is not UTF-8 text: {error}") from None
    try:
        return yaml.load(text, Loader=ConfigYamlLoader)
    except _RefusedYaml as error:
        raise ConfigError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Load the pipeline config from ``path``, ``$BENCHMARK_PIPELINE_CONFIG``, or the embedded demo config.

    Errors are :class:`ConfigError` naming the file and the field.
    """
    env = os.environ if env is None else env
    path = path or env.get("BENCHMARK_PIPELINE_CONFIG")
    if path:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)  # never more than the limit, whatever the file's size
        except OSError as error:
            raise ConfigError(f"cannot read config file {source}: {error}") from None
    else:
        source = f"benchmark_pipeline/{DEMO_CONFIG_RESOURCE}"
        data = resources.files("benchmark_pipeline").joinpath(DEMO_CONFIG_RESOURCE).read_bytes()
    raw = parse_config_text(data, source)
    try:
        config = config_from_dict(raw, source_path=source, env=env)
    except ConfigError as error:
        if str(error).startswith(source):
            raise
        raise ConfigError(f"{source}: {error}") from None
    for warning in deployment_warnings(config, env):
        logger.warning("%s: %s", source, warning)
    return config


#: Where the Dagster IO manager keeps asset outputs (a folder or an fsspec URL every machine can read); set in
#: deployments whose runs happen on other machines (docs/deployment.md).
IO_BASE_PATH_ENV = "BENCHMARK_PIPELINE_IO_BASE_PATH"


def deployment_warnings(config: PipelineConfig, env: Mapping[str, str]) -> list[str]:
    """What a config shared by several machines gets wrong, said at load. A local MLflow store (``sqlite:``,
    ``file:``, a path) keeps artifacts (models, ``benchmark.json``) in a folder of this machine: another
    machine's run then cannot download a model or a stored result. That is fine on one machine, so it is
    only said where the deployment is shared: the handoff's base path is set, or an Optuna storage is a
    server's (not sqlite)."""
    uri = config.mlflow.tracking_uri
    shared = bool(env.get(IO_BASE_PATH_ENV)) or any(
        not s.startswith("sqlite") for s in (*config.optuna_storages, config.optuna_sweep_storage or "sqlite")
    )
    if not shared or uri.startswith(("http://", "https://")):
        return []
    return [
        f"mlflow.tracking_uri {uri} is a local store whose artifacts only this machine can read, but this deployment "
        "is shared (the Dagster IO base path or an Optuna server storage is set): set mlflow.tracking_uri to an "
        "MLflow server started with --serve-artifacts (docs/deployment.md)"
    ]

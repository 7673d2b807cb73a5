"""The pipeline configuration: one YAML file, validated once at load into typed models; errors name the field.

Deployment values may be overridden by environment variables, so one file serves every machine:

* ``BENCHMARK_PIPELINE_CONFIG``: the YAML file (default: the embedded demo config);
* ``BENCHMARK_PIPELINE_ROOT``: ``root_dir``;
* ``MLFLOW_TRACKING_URI``: ``mlflow.tracking_uri``;
* ``BENCHMARK_PIPELINE_HPO_DIR``: ``hpo_output_dir``;
* ``BENCHMARK_PIPELINE_ENVIRONMENT``: ``environment``.

The schema is the pydantic models below: :class:`MlflowSettings` and the ``optuna`` section for the deployment,
and :class:`DataConfig`, :class:`HpoConfig` (with its :class:`Objective`) and :class:`BenchmarkConfig` for
the three sub-configs. A :class:`PipelineConfig` holds both views of each sub-config: the typed model
(``config.data``, ``config.hpo``, ``config.benchmark``) and the dict as written (``config.data_config`` ...),
since the public API (``retrieve_best_trials``, ``build_benchmark_key`` ...) takes dicts and the identity hashes
are computed from them. The public functions check a dict they are given at their boundary with
:func:`validate_objective`, :func:`validate_data_config` and :func:`validate_benchmark_config`; code that holds
a model does not check again. Only what retrieval and benchmarking read is required; the embedded demo checks
the fields its generator and sweeps read itself (:mod:`benchmark_pipeline.demo.settings`).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import ErrorDetails

from benchmark_pipeline.hashing import MAX_COMPONENT_LENGTH, MAX_DATA_VERSION_LENGTH, safe_component_problem
from benchmark_pipeline.layout import Layout, RootLayout

logger = logging.getLogger(__name__)

DEMO_CONFIG_RESOURCE = "configs/demo.yaml"
#: Largest config file read, in bytes. A pipeline config is a few KiB; the bound keeps a runaway or hostile
#: file from being parsed and hashed.
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of mappings and lists in a config file (the demo config nests 5 levels deep). PyYAML
#: composes nodes recursively, so a file of 100,000 ``[`` would otherwise end in a RecursionError.
MAX_CONFIG_DEPTH = 32

#: Bounds of every MLflow HTTP call unless ``mlflow.timeout_s`` / ``mlflow.max_retries`` say otherwise
#: (applied by :func:`benchmark_pipeline.tracking.configure_http`).
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 2

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

Direction = Literal["maximize", "minimize"]
Device = Literal["cpu", "cuda", "auto"]
BackendName = Literal["onnxruntime", "pytorch"]


class ConfigError(ValueError):
    """A configuration value is missing or has the wrong type or value; the message names the field."""


# ------------------------------------------------------------------ how a field is checked, and how it reads


def unknown_key_problem(mapping: Mapping[Any, Any], allowed: Iterable[str]) -> str | None:
    """For the first key of ``mapping`` not in ``allowed``: words naming it and the nearest valid key."""
    valid = tuple(allowed)
    for key in mapping:
        if key in valid:
            continue
        nearest = difflib.get_close_matches(str(key), valid, n=1)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        return f"has an unknown key {key!r}{hint} (valid keys: {', '.join(valid)})"
    return None


def _safe_name(max_length: int = MAX_COMPONENT_LENGTH) -> AfterValidator:
    """An identity component, by :func:`benchmark_pipeline.hashing.safe_component_problem`'s rule."""

    def check(value: str) -> str:
        problem = safe_component_problem(value, max_length)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _expected(
    sentence: str,
    *,
    got: Callable[[Any], str] | None = repr,
    allow_null: bool = False,
    only: Literal["all", "items", "self"] = "all",
) -> WrapValidator:
    """Say ``sentence`` (what was expected) and what was ``got`` instead, whatever the check that failed.

    A null is refused unless ``allow_null`` (a field may be left out, never written ``null``); ``only``:
    rewrite every failure, only those of the items (a list's), or only those of the value itself.
    """

    def say(shown: Any) -> ValueError:
        return ValueError(sentence if got is None else f"{sentence}, got {got(shown)}")

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if value is None and not allow_null and only == "all":
            raise say(value)
        try:
            return handler(value)
        except ValidationError as error:
            first = error.errors()[0]
            if only == "all" or (only == "items") == bool(first["loc"]):
                raise say(first.get("input") if only == "items" else value) from None
            raise

    return WrapValidator(check)


def _one_of(choices: Any) -> WrapValidator:
    """A ``Literal`` field's error, naming its values."""
    return _expected(f"must be one of {get_args(choices)}", allow_null=True)


def _null_means(default: Any) -> BeforeValidator:
    """``null`` stands for ``default``."""
    return BeforeValidator(lambda value: default if value is None else value)


def _empty_means(default: Any) -> BeforeValidator:
    """``null`` or any empty value (``[]``, ``{}``, ``""``) stands for ``default``."""
    return BeforeValidator(lambda value: value or default)


def _import_string(value: str) -> str:
    if not _IMPORT_STRING.match(value):
        raise ValueError("not an import string")
    return value


def _storage_url(value: str) -> str:
    if "://" not in value:
        raise ValueError("not a URL")
    return value


def _distinct_names(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("must name at least one backbone")
    if len(set(names)) != len(names):
        raise ValueError(f"has duplicates: {names}")
    return names


def _type_name(value: Any) -> str:
    return type(value).__name__


SafeName = Annotated[str, _safe_name()]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
#: ``"package.module:function"``: a callable the benchmark imports (a metric, a PyTorch model factory).
CallablePath = Annotated[str, AfterValidator(_import_string)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeNumber = Annotated[float, Field(ge=0)]
_IMPORT_SENTENCE = "must be an import string 'package.module:function'"


class ConfigSection(BaseModel):
    """A section whose keys are all known: any other key is an error naming the nearest valid one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    #: The mapping as written (see :meth:`to_dict`).
    _source: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys_and_source(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Refuse unknown keys before the fields are read (the first error is the one reported), and keep
        the mapping as written."""
        if isinstance(value, dict) and cls.model_config.get("extra") == "forbid":
            problem = unknown_key_problem(value, cls.model_fields)
            if problem is not None:
                raise ValueError(problem)
        section = handler(value)
        if isinstance(value, dict):
            section._source = value
        return section

    def to_dict(self) -> dict[str, Any]:
        """The mapping this section was validated from, as written: identity hashes are computed from it,
        never from the model (whose defaults and ``1`` → ``1.0`` conversions would change them)."""
        return dict(self._source)


class FreeFormSection(ConfigSection):
    """A section of the user's own fields: the model reads the ones the core needs and ignores the others
    (which :meth:`to_dict` keeps)."""

    model_config = ConfigDict(extra="ignore")


def _describe(failure: ErrorDetails) -> str:
    """What was expected, in the words the config's errors use (the field's path goes before them)."""
    kind, value, context = failure["type"], failure.get("input"), failure.get("ctx") or {}
    if kind == "value_error":
        return str(context["error"])
    if kind == "missing":
        return "is required"
    if isinstance(value, bool) and kind in ("int_type", "float_type"):
        return f"must be a number, got {value!r}"
    plain = {"int_type": "int", "string_type": "str", "list_type": "list", "float_type": "a number"}
    if kind in plain:
        return f"must be {plain[kind]}, got {_type_name(value)} {value!r}"
    if kind in ("dict_type", "model_type"):
        return f"must be a mapping, got {_type_name(value)}"
    if kind == "literal_error":
        return f"must be one of {context['expected']}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal"):
        bound = f"> {context['gt']}" if kind == "greater_than" else f">= {context['ge']}"
        return f"must be {bound}, got {value!r}"
    if kind == "too_short":
        return "must not be empty"
    return f"is invalid ({failure['msg']}), got {value!r}"


def field_path(where: str, loc: tuple[int | str, ...]) -> str:
    """``where`` and pydantic's ``loc`` as the config's errors name a field: ``config.mlflow.timeout_s``,
    ``config.backbones[]`` (any item), ``hpo_config.variants.v1`` (a key or its value)."""
    path = where
    for part in loc:
        if part != "[key]":
            path += "[]" if isinstance(part, int) else f".{part}"
    return path


SectionT = TypeVar("SectionT", bound=ConfigSection)


def validate_section(model: type[SectionT], value: Any, where: str) -> SectionT:
    """``value`` validated as ``model`` (which keeps the mapping as written); else a :class:`ConfigError` naming the
    field at ``where`` (the first failure, in the order the fields are declared) and what was expected."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        failure = error.errors()[0]
        raise ConfigError(f"{field_path(where, failure['loc'])} {_describe(failure)}") from None


# ----------------------------------------------------------------------------------------- the sub-configs


class Objective(ConfigSection):
    """``hpo_config.objective``: the metric the HPO optimised and its direction (a misspelt ``direction``
    would silently maximize, hence no unknown keys)."""

    metric: str
    direction: Annotated[Direction, _one_of(Direction)] = "maximize"

    def spec(self) -> dict[str, str]:
        """``{"metric", "direction"}``, the direction filled in: what retrieval takes."""
        return {"metric": self.metric, "direction": self.direction}


class _WithObjective(FreeFormSection):
    objective: Objective


class HpoConfig(_WithObjective):
    """``hpo_config``: the ``objective``; ``variants``, when given, names the HPO variants (search spaces and
    trial counts inside them are the HPO code's business: the demo checks its own)."""

    variants: Annotated[
        dict[SafeName, dict[Any, Any]],
        _expected("must be a mapping of variant name to settings", got=_type_name, only="self"),
    ] = {}

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.variants))


class DataConfig(FreeFormSection):
    """``data_config``: the core needs only the dataset's ``name`` and ``version`` (its identity, with the
    rest hashed into the data fingerprint); the fields the embedded demo's generator reads are checked by
    the demo's own assets."""

    name: str
    #: The version heads the data fingerprint, itself a benchmark key component: room is left for "-{hash16}".
    version: Annotated[str, BeforeValidator(str), _safe_name(MAX_DATA_VERSION_LENGTH)]


class PytorchSettings(ConfigSection):
    model_factory: Annotated[CallablePath, _expected(_IMPORT_SENTENCE)] | None = None


class BenchmarkConfig(ConfigSection):
    """``benchmark_config``: the design document's ``batch_sizes, iterations, warmup, max_length, device``
    plus optional fields (``docs/benchmarking.md``), with the values the benchmark uses when one is left out."""

    batch_sizes: Annotated[
        list[Annotated[int, Field(gt=0)]], Field(min_length=1), _expected("must hold positive integers", only="items")
    ]
    iterations: PositiveInt
    warmup: NonNegativeInt
    max_length: PositiveInt
    device: Annotated[Device, _one_of(Device)] = BENCHMARK_DEFAULTS["device"]
    min_duration_s: Annotated[NonNegativeNumber, _expected("must be a number >= 0")] = BENCHMARK_DEFAULTS[
        "min_duration_s"
    ]
    intra_op_threads: Annotated[NonNegativeInt, _expected("must be an integer >= 0 (0: library default)")] = (
        BENCHMARK_DEFAULTS["intra_op_threads"]
    )
    #: ``None``: every backend the trial has a model file for.
    backends: Annotated[
        Annotated[list[BackendName], Field(min_length=1)] | None,
        _expected(
            f"must be a non-empty list drawn from {get_args(BackendName)} (or left out: every backend the trial "
            "has a model file for)"
        ),
    ] = None
    test_data: Annotated[str | None, _expected("must be the path of a .npz or .jsonl file")] = None
    task: Annotated[
        Annotated[str, AfterValidator(lambda task: task if task in BUILT_IN_TASKS else _import_string(task))] | None,
        _expected(f"(one of {BUILT_IN_TASKS}, or a metric) {_IMPORT_SENTENCE}", allow_null=True),
    ] = None
    output_tolerance: Annotated[NonNegativeNumber, _expected("must be a number >= 0")] = OPTIONAL_BENCHMARK_DEFAULTS[
        "output_tolerance"
    ]
    synthetic_int_high: Annotated[Annotated[int, Field(ge=1)], _expected("must be an integer >= 1")] = (
        OPTIONAL_BENCHMARK_DEFAULTS["synthetic_int_high"]
    )
    pytorch: PytorchSettings = Field(default_factory=PytorchSettings)
    stale_running_after_s: Annotated[PositiveNumber, _expected("must be a positive number")] = (
        DEFAULT_STALE_RUNNING_AFTER_S
    )

    def test_data_path(self, root_dir: Path) -> Path | None:
        """``test_data`` as a path (relative to ``root_dir``), or ``None`` when not configured."""
        if not self.test_data:
            return None
        path = Path(self.test_data).expanduser()
        return path if path.is_absolute() else Path(root_dir) / path


def validate_objective(hpo_config: Any) -> dict[str, str]:
    """Return ``{"metric", "direction"}`` from ``hpo_config["objective"]`` (direction defaults to maximize)."""
    return validate_section(_WithObjective, hpo_config, "hpo_config").objective.spec()


def validate_data_config(data_config: Any) -> DataConfig:
    """``data_config`` checked (see :class:`DataConfig`); a :class:`DataConfig` is returned as it is."""
    return (
        data_config if isinstance(data_config, DataConfig) else validate_section(DataConfig, data_config, "data_config")
    )


def validate_hpo_config(hpo_config: Any) -> HpoConfig:
    """``hpo_config`` checked (see :class:`HpoConfig`); an :class:`HpoConfig` is returned as it is."""
    return hpo_config if isinstance(hpo_config, HpoConfig) else validate_section(HpoConfig, hpo_config, "hpo_config")


def validate_benchmark_config(benchmark_config: Any) -> BenchmarkConfig:
    """``benchmark_config`` checked (see :class:`BenchmarkConfig`), every error naming the field; a
    :class:`BenchmarkConfig` (already checked) is returned as it is."""
    if isinstance(benchmark_config, BenchmarkConfig):
        return benchmark_config
    return validate_section(BenchmarkConfig, benchmark_config, "benchmark_config")


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


# ------------------------------------------------------------------------------ the deployment's sections


class MlflowSettings(ConfigSection):
    """``mlflow``: the tracking server (or local store) and experiment names."""

    #: Set by :func:`config_from_dict` (``$MLFLOW_TRACKING_URI``, else the file, else a sqlite store under
    #: ``root_dir``), so always a string here.
    tracking_uri: Annotated[str, _expected("must be a string")]
    hpo_experiment_prefix: Annotated[str, BeforeValidator(str)] = "hpo-"
    benchmark_experiment: Annotated[str, BeforeValidator(str)] = "benchmarks"
    #: Bounds of every MLflow HTTP call, and how long ``/health`` may take before MLflow counts as down.
    timeout_s: Annotated[
        PositiveNumber, _null_means(DEFAULT_TIMEOUT_S), _expected("must be a positive number", allow_null=True)
    ] = DEFAULT_TIMEOUT_S
    max_retries: Annotated[NonNegativeInt, _null_means(DEFAULT_MAX_RETRIES)] = DEFAULT_MAX_RETRIES

    def hpo_experiment_name(self, backbone: str) -> str:
        return f"{self.hpo_experiment_prefix}{backbone}"


class OptunaSettings(ConfigSection):
    """``optuna``: storages retrieval reads, and where the embedded demo's sweeps keep their studies."""

    storages: Annotated[
        list[str], _empty_means([]), _expected("must be a list of Optuna storage URLs", got=None, allow_null=True)
    ] = []
    sweep_storage: Annotated[
        Annotated[str, AfterValidator(_storage_url)] | None,
        _expected("must be an Optuna storage URL (e.g. postgresql://host/db) or null", allow_null=True),
    ] = None


_PathSetting = Annotated[str | Path | None, _expected("must be a path", allow_null=True)]


class _PipelineFile(ConfigSection):
    """The file's top level, once the environment overrides are applied. The sub-configs are checked by
    :class:`PipelineConfig` itself, so that one built any way (``dataclasses.replace`` included) holds checked
    sub-configs."""

    environment: SafeName
    root_dir: _PathSetting = None
    backbones: Annotated[list[SafeName], AfterValidator(_distinct_names)]
    mlflow: MlflowSettings
    optuna: Annotated[OptunaSettings, _empty_means({})] = Field(default_factory=OptunaSettings)
    hpo_output_dir: _PathSetting = None
    data_config: Any = None
    hpo_config: Any = None
    benchmark_config: Any = None


#: Keys each checked section accepts (the models' fields); anything else is a :class:`ConfigError` naming the key.
TOP_LEVEL_KEYS = tuple(_PipelineFile.model_fields)
MLFLOW_KEYS = tuple(MlflowSettings.model_fields)
OPTUNA_KEYS = tuple(OptunaSettings.model_fields)
OBJECTIVE_KEYS = tuple(Objective.model_fields)
BENCHMARK_CONFIG_KEYS = tuple(BenchmarkConfig.model_fields)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one deployment of the pipeline needs to know.

    ``data_config``, ``hpo_config`` and ``benchmark_config`` are the dicts as written (what the public API
    takes and the hashes are computed from); constructing a ``PipelineConfig`` checks them once, into the
    typed ``data``, ``hpo`` and ``benchmark``.
    """

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
    data: DataConfig = field(init=False, repr=False, compare=False)
    hpo: HpoConfig = field(init=False, repr=False, compare=False)
    benchmark: BenchmarkConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", validate_data_config(self.data_config))
        object.__setattr__(self, "hpo", validate_hpo_config(self.hpo_config))
        object.__setattr__(self, "benchmark", validate_benchmark_config(self.benchmark_config))

    @property
    def layout(self) -> Layout:
        """This deployment's default output paths (``hpo_output_dir`` may point elsewhere)."""
        return Layout(self.root_dir, self.environment)

    @property
    def variants(self) -> tuple[str, ...]:
        return self.hpo.variant_names

    @property
    def objective(self) -> dict[str, str]:
        return self.hpo.objective.spec()

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


def _resolve(path_value: str | Path | None, root: Path, default: Path) -> Path:
    if path_value is None:
        return default
    path = Path(path_value).expanduser()
    return path if path.is_absolute() else root / path


def _with_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], Path]:
    """``raw`` with the environment's overrides applied and ``mlflow.tracking_uri`` filled in, and the root."""
    sections = dict(raw)
    for key, variable in (
        ("environment", "BENCHMARK_PIPELINE_ENVIRONMENT"),
        ("root_dir", "BENCHMARK_PIPELINE_ROOT"),
        ("hpo_output_dir", "BENCHMARK_PIPELINE_HPO_DIR"),
    ):
        if env.get(variable):
            sections[key] = env[variable]
    root_value = sections.get("root_dir") or "."
    # A root_dir of the wrong type is reported by the validation; "." stands in until then.
    root = Path(root_value if isinstance(root_value, (str, Path)) else ".").expanduser().resolve()
    mlflow = sections.get("mlflow") or {}
    if isinstance(mlflow, dict):
        uri = env.get("MLFLOW_TRACKING_URI") or mlflow.get("tracking_uri")
        sections["mlflow"] = {**mlflow, "tracking_uri": RootLayout(root).default_tracking_uri if uri is None else uri}
    else:
        sections["mlflow"] = mlflow
    return sections, root


def config_from_dict(raw: Any, *, source_path: str = "<dict>", env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from parsed YAML, applying environment overrides from ``env``."""
    env = os.environ if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError(f"{source_path}: the top level must be a mapping, got {type(raw).__name__}")
    sections, root = _with_overrides(raw, env)
    file = validate_section(_PipelineFile, sections, "config")
    return PipelineConfig(
        root_dir=root,
        environment=file.environment,
        backbones=tuple(file.backbones),
        mlflow=file.mlflow,
        hpo_output_dir=_resolve(file.hpo_output_dir, root, Layout(root, file.environment).default_hpo_dir),
        data_config=file.data_config,  # the three sub-configs are checked by PipelineConfig
        hpo_config=file.hpo_config,
        benchmark_config=file.benchmark_config,
        optuna_storages=tuple(file.optuna.storages),
        source_path=source_path,
        optuna_sweep_storage=file.optuna.sweep_storage,
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
        event = self.peek_event()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in types-PyYAML
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

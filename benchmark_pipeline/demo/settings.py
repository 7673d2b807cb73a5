"""What the embedded demo needs of a config beyond what the core reads: the generator's ``data_config``
fields and, per HPO variant, ``n_trials``, ``epochs`` and a ``search_space``.

Retrieval and benchmarking never require these; only the demo's own assets and sweeps call
:func:`validate_demo_config`, so a team's config in the design document's shape loads without them. The
models below read the demo's fields and ignore the others (the core's :class:`~benchmark_pipeline.config.DataConfig`
and :class:`~benchmark_pipeline.config.HpoConfig` check those); errors name the field as the core's do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from benchmark_pipeline.config import (
    ConfigError,
    FreeFormSection,
    NonNegativeInt,
    PipelineConfig,
    PositiveInt,
    validate_section,
)

#: The backbones the demo can train (the registry in :mod:`benchmark_pipeline.demo.models`, named here so
#: that checking a config imports no torch).
DEMO_BACKBONES = ("bilstm", "deep_transformer", "tiny_transformer")


class DemoDataConfig(FreeFormSection):
    """The ``data_config`` fields the demo's dataset generator reads (all integers)."""

    vocab_size: Annotated[int, Field(ge=64)]
    max_length: Annotated[int, Field(ge=8)]
    train_size: PositiveInt
    validation_size: PositiveInt
    test_size: PositiveInt
    seed: NonNegativeInt


#: data_config fields the demo's dataset generator reads.
DEMO_DATA_FIELDS = tuple(DemoDataConfig.model_fields)


class SearchParameter(FreeFormSection):
    """One parameter of a variant's ``search_space``: ``float`` or ``int`` from ``low`` to ``high``, or one
    of ``choices``; other keys (``log``, ``step``) are Optuna's."""

    type: Literal["float", "int", "categorical"]
    choices: Annotated[list[Any], Field(min_length=1)] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict) or value.get("type") not in ("float", "int", "categorical"):
            raise ValueError("must be a mapping with type float, int or categorical")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        required = ("choices",) if self.type == "categorical" else ("low", "high")
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"needs {' and '.join(missing)} (a {self.type} parameter)")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.to_dict()['low']}) must be <= high ({self.to_dict()['high']})")
        return self


class DemoVariant(FreeFormSection):
    n_trials: PositiveInt
    epochs: PositiveInt
    search_space: dict[str, SearchParameter]


class DemoHpoConfig(FreeFormSection):
    variants: Annotated[dict[str, DemoVariant], Field(min_length=1)]


def validate_demo_config(config: PipelineConfig) -> PipelineConfig:
    """Raise :class:`ConfigError` naming the field unless ``config`` can drive the embedded demo."""
    unknown = [b for b in config.backbones if b not in DEMO_BACKBONES]
    if unknown:
        raise ConfigError(f"config.backbones {unknown} are not backbones of the embedded demo {list(DEMO_BACKBONES)}")
    validate_section(DemoDataConfig, config.data_config, "data_config")
    if not config.hpo.variants:
        raise ConfigError("hpo_config.variants must name at least one variant for the embedded demo's sweeps")
    validate_section(DemoHpoConfig, config.hpo_config, "hpo_config")
    return config


def is_demo_config(config: PipelineConfig) -> bool:
    """True when ``config`` can drive the embedded demo (so its assets belong in the code location)."""
    try:
        validate_demo_config(config)
    except ConfigError:
        return False
    return True

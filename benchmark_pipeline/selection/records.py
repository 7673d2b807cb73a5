"""Records that travel between the selection modules, the one ordering every source shares, and the reasons a
record is ineligible.

Every record here is frozen. The design document's dicts (a ``trial_info`` with its ``candidates``,
``disagreements`` and ``conflicts``) are made from them by ``to_dict()``, at the public API only
(:mod:`benchmark_pipeline.selection.trial_retrieval`); their keys and key order are part of that API.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from benchmark_pipeline.hashing import is_safe_component

SOURCE_MLFLOW = "mlflow"
SOURCE_STUDY = "study"
SOURCE_DISK = "disk"
#: Source priority, highest first.
SOURCE_PRIORITY: tuple[str, ...] = (SOURCE_MLFLOW, SOURCE_STUDY, SOURCE_DISK)

# MLflow's SQL stores clamp ±inf to ±sys.float_info.max when a metric is logged, so an "infinite" metric
# comes back finite; anything at that magnitude is treated as the infinity it was.
_CLAMPED_INFINITY = sys.float_info.max


def is_finite_metric(value: Any) -> bool:
    """True for a real, finite number (bools and MLflow's clamped infinities excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) < _CLAMPED_INFINITY


class ExclusionReason(StrEnum):
    """Why a record a source looked at is not an eligible trial; the values are the counted strings
    (``trial_info["candidates"][source]["ineligible"]``, docs/selection.md).

    Three reasons name the field they are about and are counted as ``<reason>:<field>``
    (:data:`QUALIFIED_REASONS`, :attr:`Exclusion.label`).
    """

    # MLflow runs
    DELETED = "deleted"
    STATUS_RUNNING = "status_running"
    STATUS_SCHEDULED = "status_scheduled"
    STATUS_FAILED = "status_failed"
    STATUS_KILLED = "status_killed"
    MISSING_TAG = "missing_tag"
    MALFORMED_TRIAL_NUMBER = "malformed_trial_number"
    # Optuna studies and trials
    MULTI_OBJECTIVE_STUDY = "multi_objective_study"
    STATE_RUNNING = "state_running"
    STATE_PRUNED = "state_pruned"
    STATE_FAIL = "state_fail"
    STATE_WAITING = "state_waiting"
    MISSING_ATTR = "missing_attr"
    MISSING_STORAGE = "missing_storage"
    UNREADABLE_STORAGE = "unreadable_storage"
    # trial folders
    MISSING_METRICS_FILE = "missing_metrics_file"
    UNREADABLE_METRICS_FILE = "unreadable_metrics_file"
    MISSING_TRIAL_META = "missing_trial_meta"
    UNREADABLE_TRIAL_META = "unreadable_trial_meta"
    MALFORMED_TRIAL_META = "malformed_trial_meta"
    BACKBONE_MISMATCH = "backbone_mismatch"
    NON_NUMERIC_METRIC = "non_numeric_metric"
    MISSING_TRIAL_KEY_HASH = "missing_trial_key_hash"
    # every source
    #: An identity field holds a value that could not be a key component, a filter value or a folder name (a
    #: quote, a zero-width space, an Arabic-Indic digit, 97 characters ...); counted ``unsafe_value:<field>``, the
    #: field spelt as the source spells it (``code.trial_key_hash``, ``trial_key_hash``).
    UNSAFE_VALUE = "unsafe_value"
    MISSING_METRIC = "missing_metric"
    NON_FINITE_METRIC = "non_finite_metric"
    OTHER_DATA_FINGERPRINT = "other_data_fingerprint"

    @classmethod
    def of_run_status(cls, status: str) -> ExclusionReason:
        """``"FAILED"`` → :attr:`STATUS_FAILED`: an MLflow run that is not FINISHED."""
        return cls(f"status_{status.lower()}")

    @classmethod
    def of_trial_state(cls, state_name: str) -> ExclusionReason:
        """``"PRUNED"`` → :attr:`STATE_PRUNED`: an Optuna trial that is not COMPLETE."""
        return cls(f"state_{state_name.lower()}")


#: Reasons counted with the field they name: ``missing_tag:code.backbone``, ``unsafe_value:variant``.
QUALIFIED_REASONS = frozenset({ExclusionReason.MISSING_TAG, ExclusionReason.MISSING_ATTR, ExclusionReason.UNSAFE_VALUE})


@dataclass(frozen=True)
class Exclusion:
    """One record a source looked at and excluded.

    ``variant`` is ``None`` when the record did not say (safely) which variant it belonged to: it then counts
    against every variant of the backbone. ``field`` is the tag, attribute or file field a qualified reason
    names, and only those.
    """

    reason: ExclusionReason
    variant: str | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if (self.field is not None) != (self.reason in QUALIFIED_REASONS):
            raise ValueError(f"exclusion reason {self.reason.value!r} with field {self.field!r}")

    @property
    def label(self) -> str:
        """The counted string: ``"missing_metric"``, ``"unsafe_value:code.trial_key_hash"``."""
        return self.reason.value if self.field is None else f"{self.reason.value}:{self.field}"


def unsafe_field(values: Mapping[str, Any]) -> str | None:
    """The first field of ``values`` that is set (not ``None`` or ``""``) but is not a safe identity component
    (:func:`benchmark_pipeline.hashing.is_safe_component`), or ``None`` when all are safe.

    Every identity a source hands on (backbone, variant, trial and study key, run id) goes through this before the
    record is eligible: a value that would break key building later makes the record ineligible now.
    """
    for name, value in values.items():
        if value is not None and value != "" and not is_safe_component(value):
            return name
    return None


@dataclass(frozen=True)
class TrialCandidate:
    """One eligible trial as one source sees it."""

    source: str
    backbone: str
    variant: str
    trial_id: str
    metric: float
    trial_number: int | None = None
    run_id: str | None = None
    study_name: str | None = None
    study_key_hash: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trial_dir: str | None = None
    location: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tie_break_key(candidate: TrialCandidate, direction: str) -> tuple[Any, ...]:
    """Sort key: best objective first; ties → lowest trial number (missing numbers last), then the smallest
    ``trial_id`` (the trial_key_hash), then the smallest MLflow run id (missing run ids first).

    The key is total over candidates with distinct identities, so the pick never depends on the order in
    which runs, trials or folders were listed.
    """
    objective = -candidate.metric if direction == "maximize" else candidate.metric
    number = candidate.trial_number if candidate.trial_number is not None else sys.maxsize
    return (objective, number, candidate.trial_id, candidate.run_id or "")


@dataclass(frozen=True)
class SourceScan:
    """Everything one source holds for one backbone: eligible candidates and counted exclusions.

    ``ineligible`` counts ``(reason label, variant)`` pairs; ``variant`` is ``None`` when the excluded item did
    not say which variant it belonged to (such items count against every variant of the backbone).
    ``superseded`` holds the ``(trial_id, run_id)`` of eligible records that another record of the same trial
    outranks (:mod:`benchmark_pipeline.selection.conflicts`): they stay counted as eligible, but are never
    picked and open no partition.

    Sequences given as lists are stored as tuples. Sources build a scan through
    :class:`benchmark_pipeline.selection._scan_builder.ScanBuilder`.
    """

    source: str
    backbone: str
    available: bool
    error: str | None = None
    eligible: Sequence[TrialCandidate] = ()
    ineligible: Mapping[tuple[str, str | None], int] = field(default_factory=dict)
    looked_at: Sequence[str] = ()
    superseded: frozenset[tuple[str, str | None]] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "eligible", tuple(self.eligible))
        object.__setattr__(self, "ineligible", dict(self.ineligible))
        object.__setattr__(self, "looked_at", tuple(self.looked_at))
        object.__setattr__(self, "superseded", frozenset(self.superseded))

    def with_superseded(self, records: Sequence[tuple[str, str | None]]) -> SourceScan:
        """The same scan with ``records`` (``(trial_id, run_id)``) superseded as well."""
        return replace(self, superseded=self.superseded | frozenset(records))

    def counted(self, variant: str | None = None) -> list[TrialCandidate]:
        """Eligible candidates (of ``variant``) that may be picked: not superseded."""
        return [c for c in self.candidates_for(variant) if (c.trial_id, c.run_id) not in self.superseded]

    def variants(self) -> set[str]:
        return {c.variant for c in self.counted()}

    def candidates_for(self, variant: str | None) -> list[TrialCandidate]:
        return [c for c in self.eligible if variant is None or c.variant == variant]

    def ineligible_counts(self, variant: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (reason, item_variant), count in self.ineligible.items():
            if variant is None or item_variant in (None, variant):
                counts[reason] = counts.get(reason, 0) + count
        return dict(sorted(counts.items()))

    def best(self, direction: str, variant: str | None = None) -> TrialCandidate | None:
        """The best eligible candidate (of ``variant``, or of all variants when ``None``), or ``None``."""
        candidates = self.counted(variant)
        return min(candidates, key=lambda c: tie_break_key(c, direction)) if candidates else None


# ==================================================================== what a selection reports (trial_info)


@dataclass(frozen=True)
class Disagreement:
    """A lower-priority source whose pick names another trial than the chosen one."""

    source: str
    trial_id: str
    metric: float
    run_id: str | None

    @classmethod
    def of(cls, source: str, pick: TrialCandidate) -> Disagreement:
        return cls(source=source, trial_id=pick.trial_id, metric=pick.metric, run_id=pick.run_id)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "trial_id": self.trial_id, "metric": self.metric, "run_id": self.run_id}


class ConflictKind(StrEnum):
    """Kinds of conflicting records of one trial (:mod:`benchmark_pipeline.selection.conflicts`)."""

    DUPLICATE_RUNS = "duplicate_runs"
    VALUE_MISMATCH = "value_mismatch"


@dataclass(frozen=True)
class DuplicateRunsConflict:
    """Several eligible MLflow runs carry one ``trial_key_hash``; ``counted_run_id`` is the one that counts."""

    trial_id: str
    variant: str
    run_ids: tuple[str | None, ...]
    values: tuple[float, ...]
    with_model: tuple[bool, ...]
    counted_run_id: str | None
    counted_value: float
    rule: str
    source: str = SOURCE_MLFLOW
    kind: ConflictKind = ConflictKind.DUPLICATE_RUNS

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "source": self.source,
            "trial_id": self.trial_id,
            "variant": self.variant,
            "run_ids": list(self.run_ids),
            "values": list(self.values),
            "with_model": list(self.with_model),
            "counted_run_id": self.counted_run_id,
            "counted_value": self.counted_value,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class ValueMismatchConflict:
    """Another source records another objective value for the chosen trial; the pick stands."""

    source: str
    trial_id: str
    variant: str
    run_ids: tuple[str, ...]
    values: tuple[float, ...]
    locations: tuple[str, ...]
    counted_source: str
    counted_value: float
    kind: ConflictKind = ConflictKind.VALUE_MISMATCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "source": self.source,
            "trial_id": self.trial_id,
            "variant": self.variant,
            "run_ids": list(self.run_ids),
            "values": list(self.values),
            "locations": list(self.locations),
            "counted_source": self.counted_source,
            "counted_value": self.counted_value,
        }


Conflict = DuplicateRunsConflict | ValueMismatchConflict


@dataclass(frozen=True)
class SourceSummary:
    """What one source held for one partition, and what it would have picked (``trial_info["candidates"][source]``)."""

    available: bool
    error: str | None
    looked_at: tuple[str, ...]
    eligible: int
    ineligible: Mapping[str, int]
    pick: TrialCandidate | None

    @classmethod
    def of(cls, scan: SourceScan, pick: TrialCandidate | None, variant: str | None) -> SourceSummary:
        return cls(
            available=scan.available,
            error=scan.error,
            looked_at=tuple(scan.looked_at),
            eligible=len(scan.candidates_for(variant)),
            ineligible=scan.ineligible_counts(variant),
            pick=pick,
        )

    def to_dict(self) -> dict[str, Any]:
        pick = self.pick
        return {
            "available": self.available,
            "error": self.error,
            "looked_at": list(self.looked_at),
            "eligible": self.eligible,
            "ineligible": dict(self.ineligible),
            "pick": None
            if pick is None
            else {
                "trial_id": pick.trial_id,
                "metric": pick.metric,
                "run_id": pick.run_id,
                "trial_number": pick.trial_number,
                "variant": pick.variant,
            },
        }


@dataclass(frozen=True)
class CrossReferences:
    """Where the chosen trial's run and files are, from whichever source knows them."""

    run_id: str | None
    trial_dir: str | None
    model_path: str | None
    model_uri: str | None


@dataclass(frozen=True)
class TrialPick:
    """The trial chosen for one partition (a backbone, or a backbone and variant) with its provenance: which
    source answered, what every source held, where they disagree and which records conflict.

    ``to_dict()`` is the design document's ``trial_info``.
    """

    chosen: TrialCandidate
    source: str
    metric_name: str
    direction: str
    selection_scope: str
    disagreements: tuple[Disagreement, ...]
    conflicts: tuple[Conflict, ...]
    mlflow_consulted: bool
    mlflow_not_consulted_reason: str | None
    #: One summary per source, in :data:`SOURCE_PRIORITY` order.
    candidates: Mapping[str, SourceSummary]
    #: The HPO folder this selection read: benchmark_best_trials may read model files below it.
    hpo_output_dir: str
    references: CrossReferences

    @property
    def sources_agree(self) -> bool:
        return not self.disagreements

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "backbone": chosen.backbone,
            "variant": chosen.variant,
            "trial_id": chosen.trial_id,
            "trial_key_hash": chosen.trial_id,
            "trial_number": chosen.trial_number,
            "study_name": chosen.study_name,
            "study_key_hash": chosen.study_key_hash,
            "metric_name": self.metric_name,
            "metric": chosen.metric,
            "direction": self.direction,
            "source": self.source,
            "selection_scope": self.selection_scope,
            "hyperparameters": dict(chosen.hyperparameters),
            "sources_agree": self.sources_agree,
            "disagreements": [d.to_dict() for d in self.disagreements],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "mlflow_consulted": self.mlflow_consulted,
            "mlflow_not_consulted_reason": self.mlflow_not_consulted_reason,
            "candidates": {source: summary.to_dict() for source, summary in self.candidates.items()},
            "hpo_output_dir": self.hpo_output_dir,
            "run_id": self.references.run_id,
            "trial_dir": self.references.trial_dir,
            "model_path": self.references.model_path,
            "model_uri": self.references.model_uri,
        }

"""Records that cross the selection layer's boundaries, and the one ordering every source shares."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
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


#: Exclusion reason of a record whose identity field holds a value that could not be a key component, a
#: filter value or a folder name (a quote, a zero-width space, an Arabic-Indic digit, 97 characters ...):
#: ``unsafe_value:<field>``, the field spelt as the source spells it (``code.trial_key_hash``, ``trial_key_hash``).
UNSAFE_VALUE = "unsafe_value"


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


@dataclass
class SourceScan:
    """Everything one source holds for one backbone: eligible candidates and counted exclusions.

    ``ineligible`` counts ``(reason, variant)`` pairs; ``variant`` is ``None`` when the excluded item did not
    say which variant it belonged to (such items count against every variant of the backbone).
    ``superseded`` holds the ``(trial_id, run_id)`` of eligible records that another record of the same trial
    outranks (:mod:`benchmark_pipeline.selection.conflicts`): they stay counted as eligible, but are never
    picked and open no partition.
    """

    source: str
    backbone: str
    available: bool
    error: str | None = None
    eligible: list[TrialCandidate] = field(default_factory=list)
    ineligible: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    looked_at: list[str] = field(default_factory=list)
    superseded: set[tuple[str, str | None]] = field(default_factory=set)

    def exclude(self, reason: str, variant: str | None = None) -> None:
        self.ineligible[(reason, variant)] += 1

    def counted(self, variant: str | None = None) -> list[TrialCandidate]:
        """Eligible candidates (of ``variant``) that may be picked: not superseded."""
        return [c for c in self.candidates_for(variant) if (c.trial_id, c.run_id) not in self.superseded]

    def variants(self) -> set[str]:
        return {c.variant for c in self.counted()}

    def candidates_for(self, variant: str | None) -> list[TrialCandidate]:
        return [c for c in self.eligible if variant is None or c.variant == variant]

    def ineligible_counts(self, variant: str | None = None) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (reason, item_variant), count in self.ineligible.items():
            if variant is None or item_variant in (None, variant):
                counts[reason] += count
        return dict(sorted(counts.items()))

    def best(self, direction: str, variant: str | None = None) -> TrialCandidate | None:
        """The best eligible candidate (of ``variant``, or of all variants when ``None``), or ``None``."""
        candidates = self.counted(variant)
        return min(candidates, key=lambda c: tie_break_key(c, direction)) if candidates else None

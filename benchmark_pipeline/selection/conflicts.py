"""Conflicting records of one trial, and which record counts.

Two kinds are detected (:class:`~benchmark_pipeline.selection.records.ConflictKind`; both are a WARNING,
listed in ``trial_info["conflicts"]`` and fail the ``sources_agree`` asset check with WARN):

* ``duplicate_runs``: several eligible (FINISHED) MLflow runs carry one ``code.trial_key_hash``. Exactly one
  of them counts; the others stay counted as eligible records but can never be picked (they are
  *superseded*). The counted run is the first by :func:`duplicate_run_rank`:

  1. a run another source cross-references for that trial (the Optuna trial's ``mlflow_run_id`` user
     attribute, ``trial_meta.json``'s ``mlflow_run_id``): the run the HPO code itself recorded;
  2. a run with model artifacts (anything under ``model/``, listed only for duplicated trials): a run
     without a model can never win against one that has it;
  3. the smallest run id.

  The objective value is deliberately not part of the rule (a stray duplicate's better value is exactly what
  must not decide), and neither is the start time (set by the client, so not evidence of which run is the
  original).

* ``value_mismatch``: the chosen trial's objective value differs, beyond :data:`VALUE_REL_TOLERANCE`, from
  the value another source records for the same ``trial_key_hash`` (an Optuna trial value, a
  ``metrics.json``). The pick stands (the source priority decides), but the disagreement is reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.selection.records import (
    SOURCE_MLFLOW,
    SOURCE_PRIORITY,
    DuplicateRunsConflict,
    SourceScan,
    TrialCandidate,
    ValueMismatchConflict,
)

logger = logging.getLogger(__name__)

#: Two records of one trial agree when their values are equal to this relative tolerance: every source stores
#: the objective as a double, so a real difference is never this small, and a float32 logged through two
#: paths is still caught as equal.
VALUE_REL_TOLERANCE = 1e-9

# Why a duplicated trial's counted run won, as reported in the conflict.
_BY_CROSS_REFERENCE = "cross-referenced by the Optuna study or trial_meta.json"
_BY_MODEL = "the only run(s) with model artifacts"
_BY_RUN_ID = "smallest run id"


def has_model_artifacts(client: MlflowClient, run_id: str) -> bool:
    """True when the run has anything under ``model/``; a listing that fails counts as no model (logged)."""
    try:
        return bool(client.list_artifacts(run_id, contract.MODEL_ARTIFACT_DIR))
    except (MlflowException, OSError) as error:
        logger.warning(
            "cannot list the model artifacts of MLflow run %s (%s: %s); counted as a run without a model",
            run_id,
            type(error).__name__,
            error,
        )
        return False


def duplicate_run_rank(
    candidate: TrialCandidate, cross_referenced: set[str], with_model: set[str]
) -> tuple[bool, bool, str]:
    """Sort key of one run of a duplicated trial: cross-referenced first, then with a model, then smallest run id."""
    run_id = candidate.run_id or ""
    return (run_id not in cross_referenced, run_id not in with_model, run_id)


def cross_references(scans: Mapping[str, SourceScan]) -> dict[str, set[str]]:
    """``{trial_key_hash: {run ids}}`` that the study and disk sources record for each trial."""
    found: dict[str, set[str]] = {}
    for source, scan in scans.items():
        if source == SOURCE_MLFLOW:
            continue
        for candidate in scan.eligible:
            if candidate.run_id:
                found.setdefault(candidate.trial_id, set()).add(candidate.run_id)
    return found


def resolve_duplicate_runs(
    scans: Mapping[str, SourceScan], client: MlflowClient | None
) -> tuple[SourceScan, list[DuplicateRunsConflict]]:
    """Decide which run counts for every trial that several eligible MLflow runs claim. Returns the MLflow scan
    with the other runs superseded, and one ``duplicate_runs`` conflict per such trial (each logged)."""
    scan = scans[SOURCE_MLFLOW]
    by_trial: dict[str, list[TrialCandidate]] = {}
    for candidate in scan.eligible:
        by_trial.setdefault(candidate.trial_id, []).append(candidate)
    references = cross_references(scans)
    conflicts = []
    superseded: list[tuple[str, str | None]] = []
    for trial_id, runs in sorted(by_trial.items()):
        if len(runs) < 2:
            continue
        conflict, outranked = _resolve_trial(scan.backbone, trial_id, runs, references.get(trial_id, set()), client)
        conflicts.append(conflict)
        superseded += [(r.trial_id, r.run_id) for r in outranked]
    return scan.with_superseded(superseded), conflicts


def _resolve_trial(
    backbone: str,
    trial_id: str,
    runs: Sequence[TrialCandidate],
    references: set[str],
    client: MlflowClient | None,
) -> tuple[DuplicateRunsConflict, list[TrialCandidate]]:
    """The conflict of one duplicated trial (logged), and the runs that do not count."""
    referenced = references & {r.run_id for r in runs if r.run_id}
    with_model = {r.run_id for r in runs if r.run_id and client is not None and has_model_artifacts(client, r.run_id)}
    ranked = sorted(runs, key=lambda r: duplicate_run_rank(r, referenced, with_model))
    counted = ranked[0]
    if referenced:
        reason = _BY_CROSS_REFERENCE
    elif with_model and len(with_model) < len(runs):
        reason = _BY_MODEL
    else:
        reason = _BY_RUN_ID
    ordered = sorted(runs, key=lambda r: r.run_id or "")
    conflict = DuplicateRunsConflict(
        trial_id=trial_id,
        variant=counted.variant,
        run_ids=tuple(r.run_id for r in ordered),
        values=tuple(r.metric for r in ordered),
        with_model=tuple(r.run_id in with_model for r in ordered),
        counted_run_id=counted.run_id,
        counted_value=counted.metric,
        rule=reason,
    )
    logger.warning(
        "Conflicting records: %d FINISHED MLflow runs of backbone %s carry trial_key_hash %s (values %s); "
        "counting run %s (%s), ignoring %s",
        len(runs), backbone, trial_id[:12], ", ".join(f"{r.run_id}={r.metric:.6g}" for r in ordered),
        counted.run_id, reason, ", ".join(str(r.run_id) for r in ranked[1:]),
    )  # fmt: skip
    if counted.run_id not in with_model and client is not None:
        logger.warning(
            "The counted run %s of trial %s has no model artifacts under %s/",
            counted.run_id,
            trial_id[:12],
            contract.MODEL_ARTIFACT_DIR,
        )
    return conflict, ranked[1:]


def values_agree(first: float, second: float) -> bool:
    return math.isclose(first, second, rel_tol=VALUE_REL_TOLERANCE, abs_tol=0.0)


def value_conflicts(
    chosen: TrialCandidate, answering: str, scans: Mapping[str, SourceScan], partition: str
) -> list[ValueMismatchConflict]:
    """``value_mismatch`` conflicts: each other source whose records of the chosen trial hold another value
    (logged as one WARNING per source)."""
    conflicts = []
    for source in SOURCE_PRIORITY:
        if source == answering or not scans[source].available:
            continue
        records = [
            c
            for c in scans[source].counted()
            if c.trial_id == chosen.trial_id and not values_agree(c.metric, chosen.metric)
        ]
        if not records:
            continue
        conflicts.append(
            ValueMismatchConflict(
                source=source,
                trial_id=chosen.trial_id,
                variant=chosen.variant,
                run_ids=tuple(sorted({c.run_id for c in records if c.run_id})),
                values=tuple(c.metric for c in records),
                locations=tuple(c.location for c in records),
                counted_source=answering,
                counted_value=chosen.metric,
            )
        )
        logger.warning(
            "Conflicting records for %s: the chosen trial %s has %s=%.9g in %s, but %s records %s (%s); using %s's value",
            partition, chosen.trial_id[:12], "the objective", chosen.metric, answering, source,
            ", ".join(f"{c.metric:.9g}" for c in records), "; ".join(c.location for c in records), answering,
        )  # fmt: skip
    return conflicts

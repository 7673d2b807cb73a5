"""Deterministic best-trial retrieval with an explicit source priority: MLflow > Optuna study > disk.

The rules (the contract, also in ``docs/selection.md``):

1. Each source (a :class:`~benchmark_pipeline.selection.trial_source.TrialSource`: ``_mlflow_source``,
   ``_study_source``, ``_disk_source`` say what is eligible) is scanned for every eligible trial of a backbone;
   ineligible items are counted per :class:`~benchmark_pipeline.selection.records.ExclusionReason` and logged,
   never dropped silently.
2. A source *answers* a partition (a backbone, or a backbone × variant) only when it is reachable and has at
   least one eligible trial for it; the highest-priority answering source wins.
3. Within a source, the best trial is the one with the best objective value; ties go to the lowest trial
   number, then the smallest trial_key_hash, then the smallest MLflow run id (:func:`tie_break_key`).
4. When available sources pick different trials for a partition, a WARNING names each pick and the
   source used; ``trial_info["sources_agree"]`` is False and ``trial_info["disagreements"]`` lists them.
5. An unreachable MLflow server is a WARNING and a fallback, found within ``mlflow_timeout_s``; no eligible
   trial in any source for a requested backbone is a :class:`NoTrialsFoundError` naming where it looked.
   A selection made without MLflow says so: ``trial_info["mlflow_consulted"]`` is False and
   ``trial_info["mlflow_not_consulted_reason"]`` says why.
6. Conflicting records of one trial (several FINISHED MLflow runs with one ``trial_key_hash``; a value that
   differs between sources for the chosen trial) are a WARNING and are listed in ``trial_info["conflicts"]``;
   which duplicated run counts is decided by :mod:`benchmark_pipeline.selection.conflicts`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.config import PipelineConfig, validate_objective
from benchmark_pipeline.hashing import data_fingerprint, require_safe_component
from benchmark_pipeline.layout import Layout
from benchmark_pipeline.selection._disk_source import DiskSource
from benchmark_pipeline.selection._mlflow_source import MlflowSource
from benchmark_pipeline.selection._study_source import StudyDirectionError, StudySource
from benchmark_pipeline.selection.conflicts import resolve_duplicate_runs, value_conflicts
from benchmark_pipeline.selection.records import (
    SOURCE_MLFLOW,
    SOURCE_PRIORITY,
    Conflict,
    CrossReferences,
    Disagreement,
    DuplicateRunsConflict,
    SourceScan,
    SourceSummary,
    TrialCandidate,
    TrialPick,
)
from benchmark_pipeline.selection.study_storage import StudyStorages
from benchmark_pipeline.selection.trial_source import TrialSource
from benchmark_pipeline.tracking import client_or_default

logger = logging.getLogger(__name__)

SELECTION_SCOPES = ("overall", "per_variant")

__all__ = [
    "SELECTION_SCOPES",
    "NoTrialsFoundError",
    "StudyDirectionError",
    "compare_sources",
    "retrieve_best_trials",
    "retrieve_configured_best_trials",
    "retrieve_from_disk",
    "retrieve_from_mlflow",
    "retrieve_from_study",
]


class NoTrialsFoundError(LookupError):
    """No source holds an eligible trial for a requested backbone (the message says where it looked)."""


def retrieve_from_mlflow(
    backbone: str,
    hpo_experiments: Mapping[str, Mapping[str, str]],
    hpo_config: Mapping[str, Any],
    mlflow_client: MlflowClient | None,
    *,
    data_config: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
) -> SourceScan:
    """Scan the MLflow runs of ``backbone``'s HPO experiment (``hpo_experiments[backbone]``: ``{name, id}``)."""
    objective = validate_objective(hpo_config)
    data_fp = data_fingerprint(data_config) if data_config else None
    source = MlflowSource(mlflow_client, hpo_experiments, objective["metric"], data_fp=data_fp, timeout_s=timeout_s)
    return source.scan(backbone)


def retrieve_from_study(
    backbone: str,
    hpo_dir: Path,
    hpo_config: Mapping[str, Any],
    *,
    storages: Iterable[str] = (),
    studies: Iterable[optuna.Study] = (),
    data_config: Mapping[str, Any] | None = None,
    storage_pool: StudyStorages | None = None,
) -> SourceScan:
    """Scan the Optuna studies of ``backbone``; raises :class:`StudyDirectionError` on a contrary direction.

    ``storage_pool``: the storages (one connection pool per URL) to read through; pass one to share them
    across backbones, as :func:`retrieve_best_trials` does.
    """
    objective = validate_objective(hpo_config)
    data_fp = data_fingerprint(data_config) if data_config else None
    source = StudySource(
        hpo_dir,
        objective["direction"],
        extra_storages=storages,
        studies={backbone: list(studies)},
        data_fp=data_fp,
        storage_pool=storage_pool,
    )
    return source.scan(backbone)


def retrieve_from_disk(
    backbone: str, hpo_dir: Path, hpo_config: Mapping[str, Any], data_config: Mapping[str, Any] | None = None
) -> SourceScan:
    """Scan the trial folders of ``backbone`` under ``hpo_dir``."""
    objective = validate_objective(hpo_config)
    data_fp = data_fingerprint(data_config) if data_config else None
    return DiskSource(hpo_dir, objective["metric"], data_fp=data_fp).scan(backbone)


def _disagreements(picks: Mapping[str, TrialCandidate | None]) -> list[Disagreement]:
    ordered = [(source, pick) for source in SOURCE_PRIORITY if (pick := picks.get(source)) is not None]
    if not ordered:
        return []
    chosen = ordered[0][1]
    return [Disagreement.of(source, pick) for source, pick in ordered[1:] if pick.trial_id != chosen.trial_id]


def compare_sources(picks: Mapping[str, TrialCandidate | None]) -> list[dict[str, Any]]:
    """The picks (in priority order) that differ from the highest-priority pick, as dicts with ``source``,
    ``trial_id``, ``metric`` and ``run_id``. Empty when every available pick names the same trial."""
    return [d.to_dict() for d in _disagreements(picks)]


def _cross_references(chosen: TrialCandidate, scans: Mapping[str, SourceScan], hpo_dir: Path) -> CrossReferences:
    """Run id, trial folder and model locations for the chosen trial, from whichever source knows them."""
    # counted(): a superseded duplicate run never lends the chosen trial its run id.
    same_trial = [c for scan in scans.values() for c in scan.counted() if c.trial_id == chosen.trial_id]
    run_id = chosen.run_id or next((c.run_id for c in same_trial if c.run_id), None)
    folder = chosen.trial_dir or next((c.trial_dir for c in same_trial if c.trial_dir), None)
    if folder is None and chosen.study_key_hash:
        guess = contract.trial_dir(hpo_dir, chosen.backbone, chosen.study_key_hash, chosen.trial_id)
        folder = str(guess) if guess.is_dir() else None
    model_path = (
        str(Path(folder) / contract.ONNX_FILE) if folder and (Path(folder) / contract.ONNX_FILE).is_file() else None
    )
    return CrossReferences(
        run_id=run_id,
        trial_dir=folder,
        model_path=model_path,
        model_uri=f"runs:/{run_id}/{contract.MODEL_ARTIFACT_DIR}/{contract.ONNX_FILE}" if run_id else None,
    )


@dataclass(frozen=True)
class _Selection:
    """What every partition of one retrieval is selected by."""

    metric_name: str
    direction: str
    selection_scope: str
    hpo_dir: Path


@dataclass(frozen=True)
class _BackboneScans:
    """Every source's scan of one backbone (in :data:`SOURCE_PRIORITY` order), with the MLflow runs of one
    trial resolved (:func:`~benchmark_pipeline.selection.conflicts.resolve_duplicate_runs`)."""

    backbone: str
    scans: Mapping[str, SourceScan]
    duplicate_runs: tuple[DuplicateRunsConflict, ...]


def _select_partition(scanned: _BackboneScans, variant: str | None, selection: _Selection) -> TrialPick | None:
    """The pick of the highest-priority answering source for the backbone (``variant`` ``None``) or one of its
    variants, with every source's summary, disagreements and conflicts; ``None`` when no source answers."""
    scans = scanned.scans
    picks = {
        source: scans[source].best(selection.direction, variant) if scans[source].available else None
        for source in SOURCE_PRIORITY
    }
    answering = next((source for source in SOURCE_PRIORITY if picks[source] is not None), None)
    if answering is None:
        return None
    chosen = picks[answering]
    assert chosen is not None
    disagreements = _disagreements(picks)
    partition = scanned.backbone if variant is None else f"{scanned.backbone}/{variant}"
    if disagreements:
        _warn_disagreement(partition, answering, chosen, disagreements)
    # Duplicated runs of the partition's trials (they may have decided the pick), then the chosen trial's values.
    conflicts: list[Conflict] = [c for c in scanned.duplicate_runs if variant is None or c.variant == variant]
    conflicts += value_conflicts(chosen, answering, scans, partition)
    mlflow_scan = scans[SOURCE_MLFLOW]
    pick = TrialPick(
        chosen=chosen,
        source=answering,
        metric_name=selection.metric_name,
        direction=selection.direction,
        selection_scope=selection.selection_scope,
        disagreements=tuple(disagreements),
        conflicts=tuple(conflicts),
        mlflow_consulted=mlflow_scan.available,
        mlflow_not_consulted_reason=None if mlflow_scan.available else (mlflow_scan.error or "unavailable"),
        candidates={source: SourceSummary.of(scans[source], picks[source], variant) for source in SOURCE_PRIORITY},
        hpo_output_dir=str(selection.hpo_dir),
        references=_cross_references(chosen, scans, selection.hpo_dir),
    )
    logger.info(
        "Best trial for %s: %s (#%s) %s=%.6g from %s; ineligible: %s",
        partition,
        chosen.trial_id[:12],
        chosen.trial_number,
        selection.metric_name,
        chosen.metric,
        answering,
        {s: scans[s].ineligible_counts(variant) for s in SOURCE_PRIORITY if scans[s].ineligible_counts(variant)}
        or "none",
    )
    return pick


def _warn_disagreement(
    partition: str, answering: str, chosen: TrialCandidate, disagreements: Sequence[Disagreement]
) -> None:
    others = ", ".join(f"{d.source}={d.trial_id[:12]} ({d.metric:.6g})" for d in disagreements)
    logger.warning(
        "Sources disagree on the best trial for %s: %s=%s (%.6g), %s. Using %s (higher priority).",
        partition,
        answering,
        chosen.trial_id[:12],
        chosen.metric,
        others,
        answering,
    )


def retrieve_best_trials(
    backbone_values: list[str],
    hpo_experiments: dict[str, dict[str, str]],
    benchmark_experiment: dict[str, str] | None,
    selection_config: dict[str, Any],
    hpo_config: dict[str, Any],
    data_config: dict[str, Any],
    root_dir: Path,
    environment: str,
    selection_scope: str = "overall",
    mlflow_client: MlflowClient | None = None,
) -> dict[str, Any]:
    """Retrieve the best trial per backbone (``"overall"``) or per backbone and variant (``"per_variant"``).

    Args:
        backbone_values: backbones to select for; each must be a safe name (``[A-Za-z0-9._-]``).
        hpo_experiments: ``{backbone: {"name": ..., "id": ...}}``; either key may be given.
        benchmark_experiment: accepted for the design document's signature; selection does not read it.
        selection_config: optional ``tracking_uri`` (used when ``mlflow_client`` is None; else
            ``$MLFLOW_TRACKING_URI``; else MLflow is skipped), ``hpo_output_dir`` (default
            ``{root_dir}/outputs/hpo/{environment}``), ``optuna_storages`` (extra storage URLs),
            ``optuna_studies`` (``{backbone: optuna.Study}``), ``mlflow_timeout_s`` (how long ``/health`` may take;
            default: MLflow's configured request timeout, 30 s unless ``mlflow.timeout_s`` says otherwise).
        hpo_config: its ``objective`` gives the metric and direction.
        data_config: trials that record a different data fingerprint are ineligible.
        selection_scope: ``"overall"`` → ``{backbone: trial_info}``; ``"per_variant"`` →
            ``{backbone: {variant: trial_info}}`` (variants sorted).

    Raises:
        ValueError: unknown ``selection_scope`` or an unsafe backbone name.
        StudyDirectionError: a study's direction contradicts the config.
        NoTrialsFoundError: no source has an eligible trial for a backbone.
    """
    if selection_scope not in SELECTION_SCOPES:
        raise ValueError(f"selection_scope must be one of {SELECTION_SCOPES}, got {selection_scope!r}")
    objective = validate_objective(hpo_config)
    for backbone in backbone_values:
        require_safe_component(backbone, "backbone")
    hpo_dir = Path(selection_config.get("hpo_output_dir") or Layout(Path(root_dir), environment).default_hpo_dir)
    client = client_or_default(mlflow_client, selection_config.get("tracking_uri"))
    selection = _Selection(objective["metric"], objective["direction"], selection_scope, hpo_dir)

    # One Optuna storage (one bounded connection pool) per URL for the whole retrieval, closed at the end.
    with StudyStorages() as storage_pool:
        sources = _sources(
            selection,
            client=client,
            hpo_experiments=hpo_experiments,
            selection_config=selection_config,
            data_fp=data_fingerprint(data_config) if data_config else None,
            storage_pool=storage_pool,
        )
        picks = _retrieve_partitions(backbone_values, sources, selection)
    return {backbone: _trial_infos(entry) for backbone, entry in picks.items()}


@dataclass(frozen=True)
class _Sources:
    """The sources of one retrieval, in :data:`SOURCE_PRIORITY` order; MLflow's is also named, since its outage
    is logged once and its client resolves duplicated runs."""

    mlflow: MlflowSource
    ranked: tuple[TrialSource, ...]


def _sources(
    selection: _Selection,
    *,
    client: MlflowClient | None,
    hpo_experiments: Mapping[str, Mapping[str, str]],
    selection_config: Mapping[str, Any],
    data_fp: str | None,
    storage_pool: StudyStorages,
) -> _Sources:
    studies: Mapping[str, optuna.Study] = selection_config.get("optuna_studies") or {}
    mlflow = MlflowSource(
        client,
        hpo_experiments,
        selection.metric_name,
        data_fp=data_fp,
        timeout_s=selection_config.get("mlflow_timeout_s"),  # None: tracking.current_timeout_s()
    )
    study = StudySource(
        selection.hpo_dir,
        selection.direction,
        extra_storages=selection_config.get("optuna_storages") or (),
        studies={backbone: [given] for backbone, given in studies.items()},
        data_fp=data_fp,
        storage_pool=storage_pool,
    )
    disk = DiskSource(selection.hpo_dir, selection.metric_name, data_fp=data_fp)
    return _Sources(mlflow=mlflow, ranked=(mlflow, study, disk))


def _scan_backbone(backbone: str, sources: _Sources) -> _BackboneScans:
    mlflow_was_down = sources.mlflow.outage is not None
    scans = {source.name: source.scan(backbone) for source in sources.ranked}
    if sources.mlflow.outage is not None and not mlflow_was_down:
        logger.warning("MLflow is unavailable (%s); falling back to Optuna studies and disk", sources.mlflow.outage)
    duplicate_runs: list[DuplicateRunsConflict] = []
    if scans[SOURCE_MLFLOW].available:
        scans[SOURCE_MLFLOW], duplicate_runs = resolve_duplicate_runs(scans, sources.mlflow.client)
    return _BackboneScans(backbone, scans, tuple(duplicate_runs))


def _retrieve_partitions(
    backbone_values: list[str], sources: _Sources, selection: _Selection
) -> dict[str, TrialPick | dict[str, TrialPick]]:
    results: dict[str, TrialPick | dict[str, TrialPick]] = {}
    for backbone in sorted(set(backbone_values), key=backbone_values.index):
        scanned = _scan_backbone(backbone, sources)
        if selection.selection_scope == "overall":
            pick = _select_partition(scanned, None, selection)
            if pick is None:
                raise NoTrialsFoundError(_nothing_found_message(backbone, scanned.scans))
            results[backbone] = pick
        else:
            results[backbone] = _select_variants(scanned, selection)
    return results


def _select_variants(scanned: _BackboneScans, selection: _Selection) -> dict[str, TrialPick]:
    """One pick per variant that some available source holds an eligible trial of, in sorted variant order."""
    variants = sorted(set().union(*(scan.variants() for scan in scanned.scans.values() if scan.available)))
    if not variants:
        raise NoTrialsFoundError(_nothing_found_message(scanned.backbone, scanned.scans))
    per_variant = {}
    for variant in variants:
        pick = _select_partition(scanned, variant, selection)
        assert pick is not None  # the variant came from an eligible candidate
        per_variant[variant] = pick
    return per_variant


def _trial_infos(entry: TrialPick | Mapping[str, TrialPick]) -> dict[str, Any]:
    """The design document's shape of one backbone's picks: a ``trial_info``, or ``{variant: trial_info}``."""
    if isinstance(entry, TrialPick):
        return entry.to_dict()
    return {variant: pick.to_dict() for variant, pick in entry.items()}


def retrieve_configured_best_trials(
    config: PipelineConfig,
    selection_scope: str = "overall",
    mlflow_client: MlflowClient | None = None,
    *,
    backbones: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`retrieve_best_trials` with every argument taken from one deployment's :class:`PipelineConfig`,
    for ``backbones`` (default: the configured ones)."""
    names = list(config.backbones if backbones is None else backbones)
    return retrieve_best_trials(
        backbone_values=names,
        hpo_experiments=config.hpo_experiments(names),
        benchmark_experiment=config.benchmark_experiment(),
        selection_config=config.selection_config(),
        hpo_config=config.hpo_config,
        data_config=config.data_config,
        root_dir=config.root_dir,
        environment=config.environment,
        selection_scope=selection_scope,
        mlflow_client=mlflow_client,
    )


def _nothing_found_message(backbone: str, scans: Mapping[str, SourceScan]) -> str:
    lines = [f"no eligible trial for backbone {backbone!r} in any source:"]
    for source in SOURCE_PRIORITY:
        scan = scans[source]
        state = "unavailable" if not scan.available else f"{len(scan.eligible)} eligible"
        detail = f" ({scan.error})" if scan.error else ""
        excluded = f"; ineligible {scan.ineligible_counts()}" if scan.ineligible else ""
        lines.append(f"  {source}: {state}{detail}; looked at {', '.join(scan.looked_at) or 'nothing'}{excluded}")
    return "\n".join(lines)

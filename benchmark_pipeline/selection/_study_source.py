"""Eligible trials from Optuna studies: the ``study.db`` files under the HPO folder and any configured storages.

``study.best_trial`` is not used: with RDB storages it breaks ties arbitrarily. Every COMPLETE trial is a
candidate and the shared tie-break picks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.study._frozen import FrozenStudy  # what RDBStorage.get_all_studies() returns; not re-exported
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from benchmark_pipeline import contract
from benchmark_pipeline.selection.records import (
    SOURCE_STUDY,
    UNSAFE_VALUE,
    SourceScan,
    TrialCandidate,
    is_finite_metric,
    unsafe_field,
)
from benchmark_pipeline.selection.study_storage import StudyStorages

logger = logging.getLogger(__name__)


class StudyDirectionError(ValueError):
    """A study optimizes in the opposite direction from ``hpo_config["objective"]["direction"]``."""


def _study_belongs_to(study: optuna.Study | FrozenStudy, backbone: str) -> bool:
    owner = study.user_attrs.get(contract.STUDY_ATTR_BACKBONE)
    if owner is not None:
        return bool(owner == backbone)
    # Without the attribute only "{backbone}_v<N>" or "{backbone}" itself is claimed: a plain prefix match
    # would let "bilstm" claim "bilstm_large_v1".
    return study.study_name == backbone or (
        contract.variant_from_study_name(study.study_name) is not None
        and study.study_name.rsplit("_", 1)[0] == backbone
    )


def _scan_study(
    scan: SourceScan, study: optuna.Study, location: str, direction: str, hpo_dir: Path, data_fp: str | None
) -> None:
    if len(study.directions) != 1:
        scan.exclude("multi_objective_study")
        return
    study_direction = study.direction.name.lower()
    if study_direction != direction:
        raise StudyDirectionError(
            f"study {study.study_name!r} in {location} is set to {study_direction}, "
            f"but hpo_config.objective.direction is {direction!r}"
        )
    attrs = study.user_attrs
    variant = (
        attrs.get(contract.STUDY_ATTR_VARIANT)
        or contract.variant_from_study_name(study.study_name)
        or contract.DEFAULT_VARIANT
    )
    study_key = attrs.get(contract.STUDY_ATTR_STUDY_KEY_HASH)
    unsafe_study_attr = unsafe_field(
        {contract.STUDY_ATTR_VARIANT: variant, contract.STUDY_ATTR_STUDY_KEY_HASH: study_key}
    )
    if unsafe_study_attr:
        # Every trial of the study carries the study's identity: each is counted, none is eligible.
        logger.warning("study %r in %s: user attribute %s is %r, not a safe identity; its trials are excluded",
                       study.study_name, location, unsafe_study_attr, str(attrs.get(unsafe_study_attr))[:100])  # fmt: skip
        for _ in study.get_trials(deepcopy=False):
            scan.exclude(f"{UNSAFE_VALUE}:{unsafe_study_attr}")
        return
    study_fp = attrs.get(contract.STUDY_ATTR_DATA_FINGERPRINT)
    if data_fp and study_fp and study_fp != data_fp:
        scan.exclude("other_data_fingerprint", variant)
        return
    for trial in study.get_trials(deepcopy=False):
        if trial.state != optuna.trial.TrialState.COMPLETE:
            scan.exclude(f"state_{trial.state.name.lower()}", variant)
            continue
        if not is_finite_metric(trial.value):
            scan.exclude("non_finite_metric", variant)
            continue
        trial_key = trial.user_attrs.get(contract.ATTR_TRIAL_KEY_HASH)
        if not trial_key:
            scan.exclude(f"missing_attr:{contract.ATTR_TRIAL_KEY_HASH}", variant)
            continue
        unsafe = unsafe_field(
            {
                contract.ATTR_TRIAL_KEY_HASH: trial_key,
                contract.ATTR_MLFLOW_RUN_ID: trial.user_attrs.get(contract.ATTR_MLFLOW_RUN_ID),
            }
        )
        if unsafe:
            logger.warning("%s study %s trial %d: user attribute %s is %r, not a safe identity; trial excluded",
                           location, study.study_name, trial.number, unsafe, str(trial.user_attrs[unsafe])[:100])  # fmt: skip
            scan.exclude(f"{UNSAFE_VALUE}:{unsafe}", variant)
            continue
        folder = contract.trial_dir(hpo_dir, scan.backbone, study_key, trial_key) if study_key else None
        scan.eligible.append(
            TrialCandidate(
                source=SOURCE_STUDY,
                backbone=scan.backbone,
                variant=variant,
                trial_id=trial_key,
                metric=float(trial.value),  # type: ignore[arg-type]  # is_finite_metric(trial.value) holds
                trial_number=trial.number,
                run_id=trial.user_attrs.get(contract.ATTR_MLFLOW_RUN_ID),
                study_name=study.study_name,
                study_key_hash=study_key,
                hyperparameters=dict(sorted(trial.params.items())),
                trial_dir=str(folder) if folder is not None and folder.is_dir() else None,
                location=f"{location} study {study.study_name} trial {trial.number}",
            )
        )


def study_storages(hpo_dir: Path, backbone: str, extra_storages: Iterable[str] = ()) -> list[str]:
    """``study.db`` files under ``hpo_dir/backbone/study-*/`` (sorted), then configured storage URLs."""
    found = sorted((hpo_dir / backbone).glob(f"study-*/{contract.STUDY_DB_FILE}"))
    return [f"sqlite:///{path}" for path in found] + list(extra_storages)


def sqlite_file_of(storage: str) -> Path | None:
    """The database file a ``sqlite:`` storage URL names (relative to the working directory, as SQLAlchemy
    resolves it); ``None`` for other engines, in-memory databases and URLs SQLAlchemy cannot parse."""
    try:
        url = make_url(storage)
    except ArgumentError:
        return None
    if (
        url.get_backend_name() != "sqlite"
        or not url.database
        or url.database == ":memory:"
        or url.database.startswith("file:")
    ):
        return None
    return Path(url.database)


def scan_studies(
    backbone: str,
    hpo_dir: Path,
    direction: str,
    extra_storages: Iterable[str] = (),
    studies: Iterable[optuna.Study] = (),
    data_fp: str | None = None,
    storage_pool: StudyStorages | None = None,
) -> SourceScan:
    """Classify every trial of every study of ``backbone`` found in the storages (and in ``studies``).

    A ``sqlite:`` storage whose file does not exist is never opened (Optuna and SQLAlchemy would create an
    empty database there, and a mistyped path would look like a study with no trials): it is a WARNING,
    counted ``missing_storage``, and named in the scan's ``error``; with no other storage the source is
    unavailable. Storages are opened through ``storage_pool`` (one per URL, shared by the whole retrieval; a
    private pool, closed on return, when not given), and only the studies that belong to ``backbone`` are
    loaded.
    """
    if storage_pool is None:
        with StudyStorages() as private_pool:
            return scan_studies(backbone, hpo_dir, direction, extra_storages, studies, data_fp, private_pool)
    listed = study_storages(hpo_dir, backbone, extra_storages)
    storages, missing = [], []
    for storage in listed:
        path = sqlite_file_of(storage)
        if path is not None and not path.is_file():
            logger.warning(
                "Optuna storage %s: sqlite file %s does not exist (a mistyped path?); not opened, since opening it "
                "would create an empty database", storage, path.absolute(),
            )  # fmt: skip
            missing.append(f"sqlite file {path.absolute()} of Optuna storage {storage} does not exist")
            continue
        storages.append(storage)
    given = list(studies)
    scan = SourceScan(
        SOURCE_STUDY,
        backbone,
        available=bool(storages or given),
        looked_at=listed or [f"{hpo_dir / backbone}/study-*/{contract.STUDY_DB_FILE} (none)"],
    )
    for _ in missing:
        scan.exclude("missing_storage")
    if missing:
        scan.error = "; ".join(missing)
    if not scan.available:
        scan.error = scan.error or f"no Optuna study storage found under {hpo_dir / backbone}"
        return scan
    for storage in storages:
        try:
            rdb = storage_pool.get(storage)
            # The summaries (name and attributes) come in one query; only this backbone's studies are loaded.
            names = sorted(
                summary.study_name for summary in rdb.get_all_studies() if _study_belongs_to(summary, backbone)
            )
            loaded = [optuna.load_study(study_name=name, storage=rdb) for name in names]
        except Exception as error:  # a corrupt or foreign database must not take the other sources down
            logger.warning(
                "Optuna storage %s is unreadable for backbone %s: %s: %s",
                storage,
                backbone,
                type(error).__name__,
                error,
            )
            scan.exclude("unreadable_storage")
            continue
        for study in loaded:
            _scan_study(scan, study, storage, direction, hpo_dir, data_fp)
    for study in given:
        if _study_belongs_to(study, backbone):
            _scan_study(scan, study, "<given study>", direction, hpo_dir, data_fp)
    return scan

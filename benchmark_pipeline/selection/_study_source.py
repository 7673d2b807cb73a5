"""Eligible trials from Optuna studies: the ``study.db`` files under the HPO folder and any configured storages.

``study.best_trial`` is not used: with RDB storages it breaks ties arbitrarily. Every COMPLETE trial is a
candidate and the shared tie-break picks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import optuna
from optuna.study._frozen import FrozenStudy  # what RDBStorage.get_all_studies() returns; not re-exported
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from benchmark_pipeline import contract
from benchmark_pipeline.selection._scan_builder import ScanBuilder
from benchmark_pipeline.selection.records import (
    SOURCE_STUDY,
    Exclusion,
    ExclusionReason,
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


class _StudyReader:
    """Classifies the trials of the studies of one backbone into ``builder``."""

    def __init__(self, builder: ScanBuilder, direction: str, hpo_dir: Path, data_fp: str | None) -> None:
        self.builder = builder
        self.direction = direction
        self.hpo_dir = hpo_dir
        self.data_fp = data_fp

    def read(self, study: optuna.Study, location: str) -> None:
        builder = self.builder
        if len(study.directions) != 1:
            builder.exclude(ExclusionReason.MULTI_OBJECTIVE_STUDY)
            return
        study_direction = study.direction.name.lower()
        if study_direction != self.direction:
            raise StudyDirectionError(
                f"study {study.study_name!r} in {location} is set to {study_direction}, "
                f"but hpo_config.objective.direction is {self.direction!r}"
            )
        attrs = study.user_attrs
        variant = contract.variant_of(attrs.get(contract.STUDY_ATTR_VARIANT), study.study_name)
        study_key = attrs.get(contract.STUDY_ATTR_STUDY_KEY_HASH)
        unsafe_study_attr = unsafe_field(
            {contract.STUDY_ATTR_VARIANT: variant, contract.STUDY_ATTR_STUDY_KEY_HASH: study_key}
        )
        if unsafe_study_attr:
            # Every trial of the study carries the study's identity: each is counted, none is eligible.
            logger.warning("study %r in %s: user attribute %s is %r, not a safe identity; its trials are excluded",
                           study.study_name, location, unsafe_study_attr, str(attrs.get(unsafe_study_attr))[:100])  # fmt: skip
            for _ in study.get_trials(deepcopy=False):
                builder.exclude(ExclusionReason.UNSAFE_VALUE, field=unsafe_study_attr)
            return
        study_fp = attrs.get(contract.STUDY_ATTR_DATA_FINGERPRINT)
        if self.data_fp and study_fp and study_fp != self.data_fp:
            builder.exclude(ExclusionReason.OTHER_DATA_FINGERPRINT, variant)
            return
        for trial in study.get_trials(deepcopy=False):
            builder.add(self._classify(trial, study, location, variant=variant, study_key=study_key))

    def _classify(
        self, trial: FrozenTrial, study: optuna.Study, location: str, *, variant: str, study_key: str | None
    ) -> TrialCandidate | Exclusion:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return Exclusion(ExclusionReason.of_trial_state(trial.state.name), variant)
        if not is_finite_metric(trial.value):
            return Exclusion(ExclusionReason.NON_FINITE_METRIC, variant)
        trial_key = trial.user_attrs.get(contract.ATTR_TRIAL_KEY_HASH)
        if not trial_key:
            return Exclusion(ExclusionReason.MISSING_ATTR, variant, field=contract.ATTR_TRIAL_KEY_HASH)
        unsafe = unsafe_field(
            {
                contract.ATTR_TRIAL_KEY_HASH: trial_key,
                contract.ATTR_MLFLOW_RUN_ID: trial.user_attrs.get(contract.ATTR_MLFLOW_RUN_ID),
            }
        )
        if unsafe:
            logger.warning("%s study %s trial %d: user attribute %s is %r, not a safe identity; trial excluded",
                           location, study.study_name, trial.number, unsafe, str(trial.user_attrs[unsafe])[:100])  # fmt: skip
            return Exclusion(ExclusionReason.UNSAFE_VALUE, variant, field=unsafe)
        backbone = self.builder.backbone
        folder = contract.trial_dir(self.hpo_dir, backbone, study_key, trial_key) if study_key else None
        return TrialCandidate(
            source=SOURCE_STUDY,
            backbone=backbone,
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


def _existing_storages(listed: Iterable[str]) -> tuple[list[str], list[str]]:
    """The storages that may be opened, and a sentence for each ``sqlite:`` storage whose file does not exist
    (Optuna and SQLAlchemy would create an empty database there, and a mistyped path would look like a study
    with no trials); each of those is a WARNING."""
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
    return storages, missing


def _load_studies(storage_pool: StudyStorages, storage: str, backbone: str) -> list[optuna.Study] | None:
    """The studies of ``backbone`` in ``storage``, or ``None`` (logged) when the storage is unreadable."""
    try:
        rdb = storage_pool.get(storage)
        # The summaries (name and attributes) come in one query; only this backbone's studies are loaded.
        names = sorted(summary.study_name for summary in rdb.get_all_studies() if _study_belongs_to(summary, backbone))
        return [optuna.load_study(study_name=name, storage=rdb) for name in names]
    except Exception as error:  # a corrupt or foreign database must not take the other sources down
        logger.warning(
            "Optuna storage %s is unreadable for backbone %s: %s: %s", storage, backbone, type(error).__name__, error
        )
        return None


class StudySource:
    """Every trial of every Optuna study of a backbone: the ``study.db`` files under ``hpo_dir``, then the
    configured ``extra_storages``, then the studies given for it (``studies[backbone]``).

    A ``sqlite:`` storage whose file does not exist is never opened (see :func:`_existing_storages`): it is
    counted ``missing_storage`` and named in the scan's ``error``; with no other storage the source is
    unavailable. Storages are opened through ``storage_pool`` (one per URL, shared by the whole retrieval; a
    private pool, closed at the end of each scan, when not given), and only the studies that belong to the
    backbone are loaded. A study whose direction contradicts ``direction`` raises :class:`StudyDirectionError`.
    """

    name = SOURCE_STUDY

    def __init__(
        self,
        hpo_dir: Path,
        direction: str,
        *,
        extra_storages: Iterable[str] = (),
        studies: Mapping[str, Sequence[optuna.Study]] | None = None,
        data_fp: str | None = None,
        storage_pool: StudyStorages | None = None,
    ) -> None:
        self.hpo_dir = hpo_dir
        self.direction = direction
        self.extra_storages = list(extra_storages)
        self.studies = {backbone: list(given) for backbone, given in (studies or {}).items()}
        self.data_fp = data_fp
        self.storage_pool = storage_pool

    def scan(self, backbone: str) -> SourceScan:
        if self.storage_pool is None:
            with StudyStorages() as private_pool:
                return self._scan(backbone, private_pool)
        return self._scan(backbone, self.storage_pool)

    def _scan(self, backbone: str, storage_pool: StudyStorages) -> SourceScan:
        listed = study_storages(self.hpo_dir, backbone, self.extra_storages)
        storages, missing = _existing_storages(listed)
        given = self.studies.get(backbone, [])
        builder = ScanBuilder(
            SOURCE_STUDY,
            backbone,
            looked_at=listed or [f"{self.hpo_dir / backbone}/study-*/{contract.STUDY_DB_FILE} (none)"],
        )
        for _ in missing:
            builder.exclude(ExclusionReason.MISSING_STORAGE)
        error = "; ".join(missing) if missing else None
        if not (storages or given):
            return builder.build(
                available=False, error=error or f"no Optuna study storage found under {self.hpo_dir / backbone}"
            )
        reader = _StudyReader(builder, self.direction, self.hpo_dir, self.data_fp)
        for storage in storages:
            loaded = _load_studies(storage_pool, storage, backbone)
            if loaded is None:
                builder.exclude(ExclusionReason.UNREADABLE_STORAGE)
                continue
            for study in loaded:
                reader.read(study, storage)
        for study in given:
            if _study_belongs_to(study, backbone):
                reader.read(study, "<given study>")
        return builder.build(error=error)

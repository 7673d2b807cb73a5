"""Eligible trials from the MLflow runs of a backbone's HPO experiment."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.selection._params import parse_param
from benchmark_pipeline.selection._scan_builder import ScanBuilder
from benchmark_pipeline.selection.records import (
    SOURCE_MLFLOW,
    Exclusion,
    ExclusionReason,
    SourceScan,
    TrialCandidate,
    is_finite_metric,
    unsafe_field,
)
from benchmark_pipeline.tracking import (
    MlflowUnavailableError,
    RunRecord,
    client_tracking_uri,
    ensure_reachable,
    resolve_experiment_id,
    search_run_records,
)

logger = logging.getLogger(__name__)


class MlflowSource:
    """The MLflow runs tagged ``code.backbone = <backbone>`` in the backbone's HPO experiment
    (``experiments[backbone]``: ``{name, id}``).

    All runs are fetched, page by page (deleted ones too, so that they are counted): a run is eligible when
    it is FINISHED, active, carries the required tags with safe values (``unsafe_value:<tag>`` otherwise) and a
    finite objective metric, and — when it says which data it was trained on (``code.data_fingerprint``) —
    matches ``data_fp``.

    Once the server is found unreachable, later scans of this source answer unavailable with the same error
    at once, instead of waiting out the timeout again for each backbone (:attr:`outage`).
    """

    name = SOURCE_MLFLOW

    def __init__(
        self,
        client: MlflowClient | None,
        experiments: Mapping[str, Mapping[str, str]],
        metric_name: str,
        *,
        data_fp: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.client = client
        self.experiments = experiments
        self.metric_name = metric_name
        self.data_fp = data_fp
        self.timeout_s = timeout_s
        #: Why the configured server was unreachable, once a scan found it so; ``None`` while it was not.
        self.outage: str | None = None

    def scan(self, backbone: str) -> SourceScan:
        if self.outage is not None:
            return SourceScan(SOURCE_MLFLOW, backbone, available=False, error=self.outage)
        if self.client is None:
            return SourceScan(SOURCE_MLFLOW, backbone, available=False, error="no MLflow tracking URI configured")
        experiment = dict(self.experiments[backbone]) if backbone in self.experiments else None
        uri = client_tracking_uri(self.client)
        try:
            ensure_reachable(uri, self.timeout_s)
            experiment_id = resolve_experiment_id(self.client, experiment)
            if experiment_id is None:
                return SourceScan(
                    SOURCE_MLFLOW, backbone, available=True, looked_at=[f"{uri} experiment {experiment!r} (missing)"]
                )
            # Backbone names are safe components (no quotes), so they can be spliced into the filter.
            runs = list(
                search_run_records(self.client, experiment_id, f"tags.`{contract.TAG_BACKBONE}` = '{backbone}'")
            )
        except (MlflowUnavailableError, MlflowException, OSError) as error:
            self.outage = f"{type(error).__name__}: {error}"
            return SourceScan(SOURCE_MLFLOW, backbone, available=False, error=self.outage)
        builder = ScanBuilder(SOURCE_MLFLOW, backbone, looked_at=[f"{uri} experiment {experiment_id}"])
        for run in runs:
            builder.add(self._classify(run, backbone))
        return builder.build()

    def _classify(self, run: RunRecord, backbone: str) -> TrialCandidate | Exclusion:
        tags = run.tags
        variant = _declared_variant(tags)
        if run.lifecycle_stage == "deleted":
            return Exclusion(ExclusionReason.DELETED, variant)
        if run.status != "FINISHED":
            return Exclusion(ExclusionReason.of_run_status(run.status), variant)
        missing = [tag for tag in contract.REQUIRED_RUN_TAGS if not tags.get(tag)]
        if missing:
            return Exclusion(ExclusionReason.MISSING_TAG, variant, field=missing[0])
        unsafe = _unsafe_identity(run)
        if unsafe:
            return Exclusion(ExclusionReason.UNSAFE_VALUE, variant, field=unsafe)
        value = run.metrics.get(self.metric_name)
        if value is None:
            return Exclusion(ExclusionReason.MISSING_METRIC, variant)
        if not is_finite_metric(value):
            return Exclusion(ExclusionReason.NON_FINITE_METRIC, variant)
        if self.data_fp and tags.get(contract.TAG_DATA_FINGERPRINT, self.data_fp) != self.data_fp:
            return Exclusion(ExclusionReason.OTHER_DATA_FINGERPRINT, variant)
        number_tag = tags.get(contract.TAG_TRIAL_NUMBER)
        try:
            trial_number = int(number_tag) if number_tag is not None else None
        except ValueError:
            return Exclusion(ExclusionReason.MALFORMED_TRIAL_NUMBER, variant)
        return TrialCandidate(
            source=SOURCE_MLFLOW,
            backbone=backbone,
            variant=run_variant(tags),
            trial_id=tags[contract.TAG_TRIAL_KEY_HASH],
            metric=float(value),
            trial_number=trial_number,
            run_id=run.run_id,
            study_name=tags.get(contract.TAG_STUDY_NAME),
            study_key_hash=tags[contract.TAG_STUDY_KEY_HASH],
            hyperparameters={k: parse_param(v) for k, v in sorted(run.params.items())},
            location=f"mlflow run {run.run_id}",
        )


def run_variant(tags: Mapping[str, str]) -> str:
    """The variant of an MLflow run, by :func:`benchmark_pipeline.contract.variant_of`."""
    return contract.variant_of(tags.get(contract.TAG_VARIANT), tags.get(contract.TAG_STUDY_NAME))


def _declared_variant(tags: Mapping[str, str]) -> str | None:
    """The run's variant when its tags say it (safely), for counting an exclusion; else ``None``."""
    if contract.TAG_VARIANT not in tags and contract.TAG_STUDY_NAME not in tags:
        return None
    variant = run_variant(tags)
    # An unsafe name is no partition: such a run is counted against every variant.
    return None if unsafe_field({contract.TAG_VARIANT: variant}) else variant


def _unsafe_identity(run: RunRecord) -> str | None:
    """The first identity of ``run`` (its required tags, variant and run id) that is not safe, logged."""
    tags = run.tags
    unsafe = unsafe_field(
        {
            contract.TAG_BACKBONE: tags[contract.TAG_BACKBONE],
            contract.TAG_VARIANT: tags.get(contract.TAG_VARIANT),
            contract.TAG_STUDY_KEY_HASH: tags[contract.TAG_STUDY_KEY_HASH],
            contract.TAG_TRIAL_KEY_HASH: tags[contract.TAG_TRIAL_KEY_HASH],
            "run_id": run.run_id,
        }
    )
    if unsafe:
        unsafe_value = run.run_id if unsafe == "run_id" else tags[unsafe]
        logger.warning(
            "MLflow run %s: %s is %r, not a safe identity; run excluded", run.run_id, unsafe, unsafe_value[:100]
        )
    return unsafe

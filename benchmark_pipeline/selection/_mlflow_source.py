"""Eligible trials from the MLflow runs of a backbone's HPO experiment."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.selection._params import parse_param
from benchmark_pipeline.selection.records import (
    SOURCE_MLFLOW,
    UNSAFE_VALUE,
    SourceScan,
    TrialCandidate,
    is_finite_metric,
    unsafe_field,
)
from benchmark_pipeline.tracking import (
    MlflowUnavailableError,
    client_tracking_uri,
    ensure_reachable,
    resolve_experiment_id,
    search_run_records,
)

logger = logging.getLogger(__name__)


def variant_of(tags: dict[str, str]) -> str:
    """``code.variant`` tag; else parsed from ``code.study_name`` (``…_v2``); else ``"default"``."""
    return (
        tags.get(contract.TAG_VARIANT)
        or contract.variant_from_study_name(tags.get(contract.TAG_STUDY_NAME))
        or contract.DEFAULT_VARIANT
    )


def scan_mlflow(
    backbone: str,
    experiment: dict[str, str] | None,
    metric_name: str,
    client: MlflowClient | None,
    data_fp: str | None = None,
    timeout_s: float | None = None,
) -> SourceScan:
    """Classify every run tagged ``code.backbone = backbone`` in the backbone's HPO experiment.

    All runs are fetched, page by page (deleted ones too, so that they are counted): a run is eligible when
    it is FINISHED, active, carries the required tags with safe values (``unsafe_value:<tag>`` otherwise) and a
    finite objective metric, and — when it says which data it was trained on (``code.data_fingerprint``) —
    matches ``data_fp``.
    """
    if client is None:
        return SourceScan(SOURCE_MLFLOW, backbone, available=False, error="no MLflow tracking URI configured")
    uri = client_tracking_uri(client)
    try:
        ensure_reachable(uri, timeout_s)
        experiment_id = resolve_experiment_id(client, experiment)
        if experiment_id is None:
            return SourceScan(
                SOURCE_MLFLOW, backbone, available=True, looked_at=[f"{uri} experiment {experiment!r} (missing)"]
            )
        # Backbone names are safe components (no quotes), so they can be spliced into the filter.
        runs = list(search_run_records(client, experiment_id, f"tags.`{contract.TAG_BACKBONE}` = '{backbone}'"))
    except (MlflowUnavailableError, MlflowException, OSError) as error:
        return SourceScan(SOURCE_MLFLOW, backbone, available=False, error=f"{type(error).__name__}: {error}")
    scan = SourceScan(SOURCE_MLFLOW, backbone, available=True, looked_at=[f"{uri} experiment {experiment_id}"])
    for run in runs:
        tags = run.tags
        variant = variant_of(tags) if contract.TAG_VARIANT in tags or contract.TAG_STUDY_NAME in tags else None
        if variant is not None and unsafe_field({contract.TAG_VARIANT: variant}):
            variant = None  # counted against every variant: the unsafe name is no partition
        if run.lifecycle_stage == "deleted":
            scan.exclude("deleted", variant)
            continue
        if run.status != "FINISHED":
            scan.exclude(f"status_{run.status.lower()}", variant)
            continue
        missing = [tag for tag in contract.REQUIRED_RUN_TAGS if not tags.get(tag)]
        if missing:
            scan.exclude(f"missing_tag:{missing[0]}", variant)
            continue
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
            scan.exclude(f"{UNSAFE_VALUE}:{unsafe}", variant)
            continue
        value = run.metrics.get(metric_name)
        if value is None:
            scan.exclude("missing_metric", variant)
            continue
        if not is_finite_metric(value):
            scan.exclude("non_finite_metric", variant)
            continue
        if data_fp and tags.get(contract.TAG_DATA_FINGERPRINT, data_fp) != data_fp:
            scan.exclude("other_data_fingerprint", variant)
            continue
        number_tag = tags.get(contract.TAG_TRIAL_NUMBER)
        try:
            trial_number = int(number_tag) if number_tag is not None else None
        except ValueError:
            scan.exclude("malformed_trial_number", variant)
            continue
        scan.eligible.append(
            TrialCandidate(
                source=SOURCE_MLFLOW,
                backbone=backbone,
                variant=variant_of(tags),
                trial_id=tags[contract.TAG_TRIAL_KEY_HASH],
                metric=float(value),
                trial_number=trial_number,
                run_id=run.run_id,
                study_name=tags.get(contract.TAG_STUDY_NAME),
                study_key_hash=tags[contract.TAG_STUDY_KEY_HASH],
                hyperparameters={k: parse_param(v) for k, v in sorted(run.params.items())},
                location=f"mlflow run {run.run_id}",
            )
        )
    return scan

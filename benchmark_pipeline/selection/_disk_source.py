"""Eligible trials from trial folders: ``{hpo_dir}/{backbone}/study-*/trial-*/metrics.json`` + ``trial_meta.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from benchmark_pipeline import contract
from benchmark_pipeline.selection._scan_builder import ScanBuilder
from benchmark_pipeline.selection.records import (
    SOURCE_DISK,
    Exclusion,
    ExclusionReason,
    SourceScan,
    TrialCandidate,
    is_finite_metric,
    unsafe_field,
)

logger = logging.getLogger(__name__)

#: The ``trial_meta.json`` fields that are identities (so must be safe names).
_IDENTITY_FIELDS = ("backbone", "variant", "study_key_hash", "trial_key_hash", "mlflow_run_id")


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable ({type(error).__name__}: {error})"
    if not isinstance(payload, dict):
        return None, f"unreadable (top level is {type(payload).__name__}, expected an object)"
    return payload, None


def _meta_variant(meta: dict[str, Any] | None) -> str | None:
    """The folder's variant when ``trial_meta.json`` could be read and names a safe one; else ``None``."""
    if meta is None:
        return None
    variant = contract.variant_of(meta.get("variant"), meta.get("study_name"))
    # An unsafe name is no partition: such a trial is counted against every variant.
    return None if unsafe_field({"variant": variant}) else variant


class DiskSource:
    """The trial folders of a backbone under ``hpo_dir``; unreadable files are logged with their path and counted."""

    name = SOURCE_DISK

    def __init__(self, hpo_dir: Path, metric_name: str, *, data_fp: str | None = None) -> None:
        self.hpo_dir = hpo_dir
        self.metric_name = metric_name
        self.data_fp = data_fp

    def scan(self, backbone: str) -> SourceScan:
        backbone_dir = self.hpo_dir / backbone
        folders = sorted(p for p in backbone_dir.glob("study-*/trial-*") if p.is_dir())
        builder = ScanBuilder(SOURCE_DISK, backbone, looked_at=[f"{backbone_dir}/study-*/trial-*"])
        if not backbone_dir.is_dir():
            return builder.build(available=False, error=f"no HPO folder {backbone_dir}")
        for folder in folders:
            builder.add(self._classify(folder, backbone))
        return builder.build()

    def _classify(self, folder: Path, backbone: str) -> TrialCandidate | Exclusion:
        meta, meta_problem = _read_json(folder / contract.TRIAL_META_FILE)
        variant = _meta_variant(meta)
        metrics, metrics_problem = _read_json(folder / contract.METRICS_FILE)
        if metrics is None:
            if metrics_problem != "missing":
                logger.warning("%s is %s; trial excluded", folder / contract.METRICS_FILE, metrics_problem)
                return Exclusion(ExclusionReason.UNREADABLE_METRICS_FILE, variant)
            return Exclusion(ExclusionReason.MISSING_METRICS_FILE, variant)
        if meta is None:
            logger.warning("%s is %s; trial excluded", folder / contract.TRIAL_META_FILE, meta_problem)
            if meta_problem == "missing":
                return Exclusion(ExclusionReason.MISSING_TRIAL_META, variant)
            return Exclusion(ExclusionReason.UNREADABLE_TRIAL_META, variant)
        problem = self._meta_problem(folder, backbone, meta, metrics)
        if problem is not None:
            return Exclusion(problem[0], variant, field=problem[1])
        assert variant is not None  # a trial_meta.json with an unsafe variant has a problem
        number = meta.get("trial_number")
        return TrialCandidate(
            source=SOURCE_DISK,
            backbone=backbone,
            variant=variant,
            trial_id=meta["trial_key_hash"],
            metric=float(metrics[self.metric_name]),
            trial_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
            run_id=meta.get("mlflow_run_id") or None,
            study_name=meta.get("study_name"),
            study_key_hash=meta.get("study_key_hash"),
            hyperparameters=dict(sorted((meta.get("hyperparameters") or {}).items())),
            trial_dir=str(folder),
            location=str(folder),
        )

    def _meta_problem(
        self, folder: Path, backbone: str, meta: dict[str, Any], metrics: dict[str, Any]
    ) -> tuple[ExclusionReason, str | None] | None:
        """Why a folder whose two files parse is still ineligible (reason and field, logged), or ``None``."""
        meta_file, metric_name = folder / contract.TRIAL_META_FILE, self.metric_name
        if meta.get("backbone", backbone) != backbone:
            logger.warning("%s says backbone %r but lies under %s; trial excluded",
                           meta_file, meta.get("backbone"), folder.parent.parent)  # fmt: skip
            return ExclusionReason.BACKBONE_MISMATCH, None
        if metric_name not in metrics:
            return ExclusionReason.MISSING_METRIC, None
        value = metrics[metric_name]
        if not is_finite_metric(value):
            logger.warning("%s: %s is %r, not a finite number; trial excluded",
                           folder / contract.METRICS_FILE, metric_name, value)  # fmt: skip
            reason = (
                ExclusionReason.NON_FINITE_METRIC if isinstance(value, float) else ExclusionReason.NON_NUMERIC_METRIC
            )
            return reason, None
        trial_key = meta.get("trial_key_hash")
        if not isinstance(trial_key, str) or not trial_key:
            return ExclusionReason.MISSING_TRIAL_KEY_HASH, None
        unsafe = unsafe_field({name: meta.get(name) for name in _IDENTITY_FIELDS})
        if unsafe:
            logger.warning("%s: %s is %r, not a safe identity; trial excluded",
                           meta_file, unsafe, str(meta[unsafe])[:100])  # fmt: skip
            return ExclusionReason.UNSAFE_VALUE, unsafe
        if self.data_fp and meta.get("data_fingerprint", self.data_fp) != self.data_fp:
            return ExclusionReason.OTHER_DATA_FINGERPRINT, None
        hyperparameters = meta.get("hyperparameters") or {}
        if not isinstance(hyperparameters, dict):
            logger.warning("%s: hyperparameters is %s, expected an object; trial excluded",
                           meta_file, type(hyperparameters).__name__)  # fmt: skip
            return ExclusionReason.MALFORMED_TRIAL_META, None
        return None

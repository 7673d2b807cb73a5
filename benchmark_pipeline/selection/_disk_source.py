"""Eligible trials from trial folders: ``{hpo_dir}/{backbone}/study-*/trial-*/metrics.json`` + ``trial_meta.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from benchmark_pipeline import contract
from benchmark_pipeline.selection.records import (
    SOURCE_DISK,
    UNSAFE_VALUE,
    SourceScan,
    TrialCandidate,
    is_finite_metric,
    unsafe_field,
)

logger = logging.getLogger(__name__)


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


def scan_disk(backbone: str, hpo_dir: Path, metric_name: str, data_fp: str | None = None) -> SourceScan:
    """Classify every trial folder of ``backbone``; unreadable files are logged with their path and counted."""
    backbone_dir = hpo_dir / backbone
    folders = sorted(p for p in backbone_dir.glob("study-*/trial-*") if p.is_dir())
    scan = SourceScan(
        SOURCE_DISK, backbone, available=backbone_dir.is_dir(), looked_at=[f"{backbone_dir}/study-*/trial-*"]
    )
    if not scan.available:
        scan.error = f"no HPO folder {backbone_dir}"
        return scan
    for folder in folders:
        meta, meta_problem = _read_json(folder / contract.TRIAL_META_FILE)
        variant = None
        if meta is not None:
            variant = (
                meta.get("variant")
                or contract.variant_from_study_name(meta.get("study_name"))
                or contract.DEFAULT_VARIANT
            )
            if unsafe_field({"variant": variant}):
                variant = None  # counted against every variant: the unsafe name is no partition
        metrics, metrics_problem = _read_json(folder / contract.METRICS_FILE)
        if metrics is None:
            if metrics_problem != "missing":
                logger.warning("%s is %s; trial excluded", folder / contract.METRICS_FILE, metrics_problem)
            scan.exclude("missing_metrics_file" if metrics_problem == "missing" else "unreadable_metrics_file", variant)
            continue
        if meta is None:
            logger.warning("%s is %s; trial excluded", folder / contract.TRIAL_META_FILE, meta_problem)
            scan.exclude("missing_trial_meta" if meta_problem == "missing" else "unreadable_trial_meta", variant)
            continue
        if meta.get("backbone", backbone) != backbone:
            logger.warning(
                "%s says backbone %r but lies under %s; trial excluded",
                folder / contract.TRIAL_META_FILE,
                meta.get("backbone"),
                backbone_dir,
            )
            scan.exclude("backbone_mismatch", variant)
            continue
        if metric_name not in metrics:
            scan.exclude("missing_metric", variant)
            continue
        value = metrics[metric_name]
        if not is_finite_metric(value):
            logger.warning(
                "%s: %s is %r, not a finite number; trial excluded", folder / contract.METRICS_FILE, metric_name, value
            )
            scan.exclude("non_finite_metric" if isinstance(value, float) else "non_numeric_metric", variant)
            continue
        trial_key = meta.get("trial_key_hash")
        if not isinstance(trial_key, str) or not trial_key:
            scan.exclude("missing_trial_key_hash", variant)
            continue
        unsafe = unsafe_field(
            {
                name: meta.get(name)
                for name in ("backbone", "variant", "study_key_hash", "trial_key_hash", "mlflow_run_id")
            }
        )
        if unsafe:
            logger.warning(
                "%s: %s is %r, not a safe identity; trial excluded",
                folder / contract.TRIAL_META_FILE,
                unsafe,
                str(meta[unsafe])[:100],
            )
            scan.exclude(f"{UNSAFE_VALUE}:{unsafe}", variant)
            continue
        if data_fp and meta.get("data_fingerprint", data_fp) != data_fp:
            scan.exclude("other_data_fingerprint", variant)
            continue
        hyperparameters = meta.get("hyperparameters") or {}
        if not isinstance(hyperparameters, dict):
            logger.warning(
                "%s: hyperparameters is %s, expected an object; trial excluded",
                folder / contract.TRIAL_META_FILE,
                type(hyperparameters).__name__,
            )
            scan.exclude("malformed_trial_meta", variant)
            continue
        number = meta.get("trial_number")
        scan.eligible.append(
            TrialCandidate(
                source=SOURCE_DISK,
                backbone=backbone,
                variant=variant or contract.DEFAULT_VARIANT,
                trial_id=trial_key,
                metric=float(value),
                trial_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
                run_id=meta.get("mlflow_run_id") or None,
                study_name=meta.get("study_name"),
                study_key_hash=meta.get("study_key_hash"),
                hyperparameters=dict(sorted(hyperparameters.items())),
                trial_dir=str(folder),
                location=str(folder),
            )
        )
    return scan

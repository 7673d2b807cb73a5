"""Asset-check verdicts, computed from what the assets produced (the assets yield them with each materialization)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.backends import CPU_PROVIDER, CUDA_PROVIDER

SOURCES_AGREE = "sources_agree"
SOURCES_AGREE_DESCRIPTION = (
    "WARN when MLflow, the Optuna study and disk pick different trials, when records of one trial conflict "
    "(duplicate MLflow runs, values that differ between sources), or when MLflow was not consulted"
)
PROVIDER_MATCHES_CONFIG = "provider_matches_config"


def sources_agree_problems(trial_info: Mapping[str, Any]) -> list[str]:
    """Why a selection cannot be fully trusted, one sentence each; empty when it can.

    Sources that pick different trials, conflicting records of one trial, and a selection made without
    MLflow (the highest-priority source) all count: the pick still stands, but someone should look.
    """
    problems = []
    if trial_info.get("mlflow_consulted") is False:
        problems.append(f"MLflow not consulted ({trial_info.get('mlflow_not_consulted_reason') or 'unavailable'})")
    disagreements = list(trial_info.get("disagreements") or [])
    if not trial_info["sources_agree"]:
        others = ", ".join(f"{d['source']}={str(d['trial_id'])[:12]} ({d['metric']:.6g})" for d in disagreements)
        problems.append(
            f"sources pick different trials: {trial_info['source']}={str(trial_info['trial_id'])[:12]} was used; {others}"
        )
    for conflict in trial_info.get("conflicts") or []:
        values = ", ".join(f"{v:.6g}" for v in conflict["values"])
        if conflict["kind"] == "duplicate_runs":
            problems.append(
                f"conflicting records: MLflow runs {', '.join(conflict['run_ids'])} all carry trial {conflict['trial_id'][:12]} "
                f"(values {values}); run {conflict['counted_run_id']} counts ({conflict['rule']})"
            )
        else:
            problems.append(
                f"conflicting records: trial {conflict['trial_id'][:12]} is {conflict['counted_value']:.6g} in {conflict['counted_source']} "
                f"but {values} in {conflict['source']}"
            )
    return problems


def sources_agree_result(asset_key: str, trial_info: Mapping[str, Any]) -> dg.AssetCheckResult:
    """WARN when available sources picked different trials, when records of one trial conflict, or when MLflow
    was not consulted (the chosen trial still stands)."""
    problems = sources_agree_problems(trial_info)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=SOURCES_AGREE,
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems)
        if problems
        else "MLflow was consulted, the sources agree and no records conflict",
        metadata={
            "source": trial_info["source"],
            "mlflow_consulted": bool(trial_info.get("mlflow_consulted", True)),
            "disagreements": dg.MetadataValue.json(list(trial_info.get("disagreements") or [])),
            "conflicts": dg.MetadataValue.json(list(trial_info.get("conflicts") or [])),
        },
    )


def expected_onnx_providers(device: str) -> tuple[str, ...]:
    return {"cpu": (CPU_PROVIDER,), "cuda": (CUDA_PROVIDER,)}.get(device, (CPU_PROVIDER, CUDA_PROVIDER))


def provider_matches_result(asset_key: str, result: Mapping[str, Any], device: str) -> dg.AssetCheckResult:
    """ERROR when ONNX Runtime (or PyTorch) ran on another device than ``benchmark_config.device`` asked for."""
    used = dict(result.get("providers_used") or {})
    onnx_ok = "onnxruntime" not in used or used["onnxruntime"] in expected_onnx_providers(device)
    torch_ok = "pytorch" not in used or device == "auto" or used["pytorch"] == f"torch:{device}"
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=PROVIDER_MATCHES_CONFIG,
        passed=onnx_ok and torch_ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"requested_device": device, "providers_used": dg.MetadataValue.json(used)},
    )

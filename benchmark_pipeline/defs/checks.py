"""Asset-check verdicts, computed from what the assets produced (the assets yield them with each materialization)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.backends import CPU_PROVIDER, CUDA_PROVIDER

SOURCES_AGREE = "sources_agree"
PROVIDER_MATCHES_CONFIG = "provider_matches_config"


def sources_agree_result(asset_key: str, trial_info: Mapping[str, Any]) -> dg.AssetCheckResult:
    """WARN when available sources picked different trials (the chosen one still stands)."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=SOURCES_AGREE,
        passed=bool(trial_info["sources_agree"]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "source": trial_info["source"],
            "disagreements": dg.MetadataValue.json(list(trial_info.get("disagreements") or [])),
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

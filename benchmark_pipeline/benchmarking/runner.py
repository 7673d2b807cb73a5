"""Benchmark one trial's model: ONNX Runtime and/or PyTorch, over the configured batch sizes, on real test data.

For each backend and batch size: ``warmup`` untimed runs, then at least ``iterations`` timed runs lasting at
least ``min_duration_s``. The batch is the first ``batch_size`` test examples (repeated when the test set is
smaller), padded/truncated to ``max_length``. Before timing, the ONNX model's predictions are compared with
PyTorch's on the whole test set, and the test macro-F1 is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark_pipeline.benchmarking.backends import (
    ModelFileError,
    open_onnx_session,
    torch_device,
    torch_threads,
)
from benchmark_pipeline.benchmarking.environment import collect_environment
from benchmark_pipeline.benchmarking.measurement import summarize, time_calls
from benchmark_pipeline.config import validate_benchmark_config
from benchmark_pipeline.hpo.dataset import LABELS, TokenBatch, load_split
from benchmark_pipeline.hpo.models import build_model
from benchmark_pipeline.hpo.training import macro_f1

logger = logging.getLogger(__name__)

#: Share of non-padding tokens on which ONNX and PyTorch must predict the same label.
MIN_PREDICTION_AGREEMENT = 0.99

ProgressCallback = Callable[[str], None]


@dataclass
class BenchmarkResult:
    """A complete benchmark of one trial; what the disk cache and the MLflow ``benchmark.json`` hold."""

    benchmark_key: str
    backbone: str
    variant: str
    trial_id: str
    hpo_run_id: str | None
    benchmark_config: dict[str, Any]
    measurements: list[dict[str, Any]]
    quality: dict[str, float]
    environment: dict[str, Any]
    started_at: float
    duration_s: float
    providers_used: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch(data: TokenBatch, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.resize(np.arange(len(data)), batch_size)
    return np.ascontiguousarray(data.input_ids[rows]), np.ascontiguousarray(data.attention_mask[rows])


def _load_torch_model(checkpoint: Path, backbone: str, hyperparameters: Mapping[str, Any], data_config: Mapping[str, Any]) -> torch.nn.Module:
    if not checkpoint.is_file():
        raise ModelFileError(f"PyTorch checkpoint not found: {checkpoint}")
    model = build_model(backbone, hyperparameters, int(data_config["vocab_size"]), len(LABELS), int(data_config["max_length"]))
    try:
        # weights_only: a checkpoint is data, never code to execute.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:
        raise ModelFileError(f"cannot load PyTorch checkpoint {checkpoint}: {type(error).__name__}: {error}") from None
    return model.eval()


def run_benchmark(
    benchmark_key: str,
    trial_info: Mapping[str, Any],
    model_dir: Path,
    test_data_path: Path,
    data_config: Mapping[str, Any],
    benchmark_config: Mapping[str, Any],
    progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Benchmark the model in ``model_dir`` (``model.onnx`` and ``model.pt``) for ``trial_info``."""
    config = validate_benchmark_config(dict(benchmark_config))
    report = progress or (lambda message: logger.info(message))
    max_length = int(config["max_length"])
    if max_length > int(data_config["max_length"]):
        raise ValueError(f"benchmark_config.max_length ({max_length}) exceeds data_config.max_length ({data_config['max_length']}), the longest sequence the models were built for")
    threads = int(config.get("intra_op_threads", 1))
    device = config.get("device", "cpu")
    data = load_split(test_data_path, max_length)
    started_at = time.time()
    started = time.monotonic()

    onnx_backend = open_onnx_session(model_dir / "model.onnx", device, threads)
    target = torch_device(device)
    torch_model = _load_torch_model(model_dir / "model.pt", trial_info["backbone"], trial_info.get("hyperparameters") or {}, data_config).to(target)

    with torch_threads(threads):
        onnx_logits = np.concatenate([onnx_backend.run(data.input_ids[i : i + 64], data.attention_mask[i : i + 64]) for i in range(0, len(data), 64)])
        with torch.inference_mode():
            torch_logits = torch_model(torch.from_numpy(data.input_ids).to(target), torch.from_numpy(data.attention_mask).to(target)).cpu().numpy()
        real = data.attention_mask.astype(bool)
        agreement = float(np.mean(onnx_logits.argmax(-1)[real] == torch_logits.argmax(-1)[real]))
        quality = {
            "test_macro_f1": macro_f1(onnx_logits.argmax(-1), data.labels),
            "prediction_agreement": agreement,
            "max_abs_logit_diff": float(np.max(np.abs(onnx_logits - torch_logits))),
            "test_examples": float(len(data)),
        }
        if agreement < MIN_PREDICTION_AGREEMENT:
            raise ModelFileError(
                f"ONNX ({model_dir / 'model.onnx'}) and PyTorch ({model_dir / 'model.pt'}) predictions agree on only "
                f"{agreement:.2%} of test tokens (< {MIN_PREDICTION_AGREEMENT:.0%}); they are not the same model"
            )

        measurements: list[dict[str, Any]] = []
        providers_used: dict[str, str] = {}
        steps = [(backend, size) for backend in config["backends"] for size in config["batch_sizes"]]
        for index, (backend, batch_size) in enumerate(steps, start=1):
            ids, mask = _batch(data, batch_size)
            if backend == "onnxruntime":
                call: Callable[[], object] = lambda: onnx_backend.run(ids, mask)  # noqa: E731
                provider = onnx_backend.provider_used
            else:
                ids_t, mask_t = torch.from_numpy(ids).to(target), torch.from_numpy(mask).to(target)

                def call() -> object:
                    with torch.inference_mode():
                        out = torch_model(ids_t, mask_t)
                    if target.type == "cuda":
                        torch.cuda.synchronize()
                    return out

                provider = f"torch:{target.type}"
            providers_used[backend] = provider
            samples = time_calls(call, int(config["warmup"]), int(config["iterations"]), float(config.get("min_duration_s", 0.0)))
            stats = summarize(samples, batch_size)
            measurements.append({"backend": backend, "batch_size": batch_size, "provider": provider, **stats.to_dict()})
            elapsed = time.monotonic() - started
            report(
                f"[{trial_info['backbone']}/{trial_info.get('variant')}] {backend} batch {batch_size} ({index}/{len(steps)}): "
                f"p50 {stats.p50_ms:.3f} ms, {stats.throughput_samples_per_s:.0f} samples/s; "
                f"elapsed {elapsed:.1f}s, ~{elapsed / index * (len(steps) - index):.1f}s left"
            )

    environment = collect_environment(threads)
    environment["onnxruntime_providers_requested"] = list(onnx_backend.providers_requested)
    environment["onnxruntime_providers_used"] = onnx_backend.session.get_providers()
    return BenchmarkResult(
        benchmark_key=benchmark_key,
        backbone=trial_info["backbone"],
        variant=trial_info.get("variant") or "default",
        trial_id=trial_info["trial_id"],
        hpo_run_id=trial_info.get("run_id"),
        benchmark_config=dict(config),
        measurements=measurements,
        quality=quality,
        environment=environment,
        started_at=started_at,
        duration_s=time.monotonic() - started,
        providers_used=providers_used,
    )

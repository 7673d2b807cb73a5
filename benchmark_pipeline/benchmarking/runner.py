"""Benchmark one trial's model, on every backend its files allow (or the configured ones), over the batch sizes.

1. Which backends run: ``benchmark_config.backends`` when given (each must have its model file), else every
   backend the trial has a model for; the result records which ran and why the others did not
   (:func:`~benchmark_pipeline.benchmarking.model_files.plan_backends`).
2. Inputs: the test data when configured (``benchmark_config.test_data`` or the ``test_data_path``
   argument), else synthesized from the ONNX model's signature (:mod:`~benchmark_pipeline.benchmarking.inputs`).
3. Before timing, when both backends run, their primary outputs are compared on the same inputs (the whole
   test set, or 8 synthetic examples): the largest absolute difference is recorded, and one above
   ``benchmark_config.output_tolerance`` (default 1e-3) means the two files are not the same model
   (:class:`ModelFileError`). With labels, the task metrics are recorded (:mod:`~benchmark_pipeline.benchmarking.metrics`).
4. For each backend and batch size: ``warmup`` untimed runs, then at least ``iterations`` timed runs lasting
   at least ``min_duration_s``. The batch is the first ``batch_size`` examples (repeated when there are
   fewer), already on the device.

ONNX Runtime and torch are imported here, when a benchmark runs, and not before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark_pipeline.benchmarking.backends import (
    BACKEND_MODULES,
    ONNXRUNTIME,
    PYTORCH,
    Backend,
    ModelFileError,
    OpenRequest,
    open_backend,
)
from benchmark_pipeline.benchmarking.inputs import (
    SYNTHETIC_EXAMPLES,
    InputSpec,
    ModelInputs,
    load_test_data,
    synthesize_inputs,
)
from benchmark_pipeline.benchmarking.measurement import summarize, time_calls
from benchmark_pipeline.benchmarking.metrics import task_metrics
from benchmark_pipeline.benchmarking.model_files import plan_backends
from benchmark_pipeline.config import BenchmarkConfig, validate_benchmark_config
from benchmark_pipeline.contract import DEFAULT_VARIANT

logger = logging.getLogger(__name__)

#: Examples per call when the backends' outputs are compared and scored on the whole test set.
EVALUATION_CHUNK = 64

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class BenchmarkResult:
    """A complete benchmark of one trial; what the disk cache and the MLflow ``benchmark.json`` hold
    (:meth:`to_dict`, the design document's shape)."""

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
    #: backend → "ran" or why it did not run.
    backends: dict[str, str] = field(default_factory=dict)
    #: where the inputs came from (the test data file, or "synthetic ...") and the PyTorch loading route.
    inputs: str = ""
    pytorch_route: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _evaluate(run: Callable[[dict[str, np.ndarray]], np.ndarray], data: ModelInputs) -> np.ndarray:
    return np.concatenate([run(chunk) for chunk in data.chunks(EVALUATION_CHUNK)])


def _compare(
    onnx_out: np.ndarray, torch_out: np.ndarray, data: ModelInputs, tolerance: float, where: str
) -> dict[str, float]:
    if onnx_out.shape != torch_out.shape:
        raise ModelFileError(
            f"{where}: ONNX output shape {onnx_out.shape} differs from PyTorch's {torch_out.shape}; they are not the same model"
        )
    difference = (
        float(np.max(np.abs(onnx_out.astype(np.float64) - torch_out.astype(np.float64)))) if onnx_out.size else 0.0
    )
    compared = {"max_abs_output_diff": difference, "output_tolerance": tolerance}
    if onnx_out.ndim >= 2:
        agree = onnx_out.argmax(-1) == torch_out.argmax(-1)
        mask = data.token_mask()
        compared["prediction_agreement"] = float(
            np.mean(agree[mask] if mask is not None and mask.shape == agree.shape else agree)
        )
    if difference > tolerance:
        raise ModelFileError(
            f"{where}: ONNX and PyTorch outputs differ by up to {difference:.3g} on the same inputs "
            f"(> benchmark_config.output_tolerance {tolerance:g}); they are not the same model"
        )
    return compared


def _inputs(
    test_data_path: Path | None, specs: list[InputSpec] | None, config: BenchmarkConfig, trial: str
) -> ModelInputs:
    max_length = config.max_length
    if test_data_path is not None:
        return load_test_data(Path(test_data_path), specs, max_length)
    if specs is None:
        raise ModelFileError(
            f"trial {trial}: without an ONNX model there is no input signature to synthesize inputs from; "
            "set benchmark_config.test_data to a .npz or .jsonl file of named model inputs"
        )
    examples = max(SYNTHETIC_EXAMPLES, max(config.batch_sizes))
    return synthesize_inputs(specs, examples, max_length, config.synthetic_int_high)


def run_benchmark(
    benchmark_key: str,
    trial_info: Mapping[str, Any],
    model_dir: Path,
    test_data_path: Path | None,
    data_config: Mapping[str, Any],
    benchmark_config: Mapping[str, Any] | BenchmarkConfig,
    progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Benchmark the model files in ``model_dir`` for ``trial_info`` (see the module docstring)."""
    from benchmark_pipeline.benchmarking.backends.pytorch import torch_threads
    from benchmark_pipeline.benchmarking.environment import collect_environment

    # A BenchmarkConfig was checked by the caller (benchmark_best_trials); a mapping is checked here.
    config = validate_benchmark_config(
        benchmark_config if isinstance(benchmark_config, BenchmarkConfig) else dict(benchmark_config)
    )
    _check_max_length(config, data_config)
    trial = f"{trial_info.get('trial_id')} of {trial_info.get('backbone')}"
    factory = config.pytorch.model_factory
    backends, not_run = plan_backends(Path(model_dir), config.backends, factory, trial)
    threads = config.intra_op_threads
    started_at = time.time()
    started = time.monotonic()
    request = OpenRequest(
        model_dir=Path(model_dir),
        trial_info=trial_info,
        device=config.device,
        intra_op_threads=threads,
        model_factory=factory,
    )
    opened = {name: open_backend(name, request) for name in BACKEND_MODULES if name in backends}
    onnx = opened.get(ONNXRUNTIME)
    data = _inputs(test_data_path, onnx.input_specs() if onnx else None, config, trial)
    with torch_threads(threads):
        quality = _quality(opened, data, config, f"trial {trial} ({model_dir})")
        label = f"[{trial_info['backbone']}/{trial_info.get('variant')}]"
        steps = [(opened[backend], backend, size) for backend in backends for size in config.batch_sizes]
        report = progress or (lambda message: logger.info(message))
        measurements = _measure(steps, data=data, config=config, started=started, label=label, report=report)
    environment = collect_environment(threads)
    for backend in opened.values():
        environment.update(backend.environment())
    return BenchmarkResult(
        benchmark_key=benchmark_key,
        backbone=trial_info["backbone"],
        variant=trial_info.get("variant") or DEFAULT_VARIANT,
        trial_id=trial_info["trial_id"],
        hpo_run_id=trial_info.get("run_id"),
        benchmark_config=config.to_dict(),  # as written, as before the model existed
        measurements=measurements,
        quality=quality,
        environment=environment,
        started_at=started_at,
        duration_s=time.monotonic() - started,
        providers_used={m["backend"]: m["provider"] for m in measurements},
        backends={**dict.fromkeys(backends, "ran"), **not_run},
        inputs=data.origin,
        pytorch_route=opened[PYTORCH].route if PYTORCH in opened else None,
    )


def _check_max_length(config: BenchmarkConfig, data_config: Mapping[str, Any]) -> None:
    max_length = config.max_length
    if "max_length" in data_config and max_length > int(data_config["max_length"]):
        raise ValueError(
            f"benchmark_config.max_length ({max_length}) exceeds data_config.max_length ({data_config['max_length']}), the longest sequence the models were built for"
        )


def _quality(opened: Mapping[str, Backend], data: ModelInputs, config: BenchmarkConfig, where: str) -> dict[str, float]:
    """Step 3 of the module docstring: every backend's primary output on the whole input set, compared when
    both ran, and scored when there are labels."""
    outputs = {name: _evaluate(opened[name].run, data) for name in BACKEND_MODULES if name in opened}
    quality: dict[str, float] = {"test_examples": float(len(data))}
    if ONNXRUNTIME in outputs and PYTORCH in outputs:
        quality.update(_compare(outputs[ONNXRUNTIME], outputs[PYTORCH], data, config.output_tolerance, where))
    if data.labels is not None:
        quality.update(task_metrics(config.task, next(iter(outputs.values())), data.labels))
    return quality


def _measure(
    steps: Sequence[tuple[Backend, str, int]],
    *,
    data: ModelInputs,
    config: BenchmarkConfig,
    started: float,
    label: str,
    report: ProgressCallback,
) -> list[dict[str, Any]]:
    """Step 4 of the module docstring: one measurement per (backend, batch size), progress reported after each
    (time elapsed since ``started``, the benchmark's start)."""
    measurements: list[dict[str, Any]] = []
    for index, (backend, name, batch_size) in enumerate(steps, start=1):
        call = backend.timed_call(data.batch(batch_size))
        samples = time_calls(call, config.warmup, config.iterations, config.min_duration_s)
        stats = summarize(samples, batch_size)
        measurements.append(
            {"backend": name, "batch_size": batch_size, "provider": backend.provider, **stats.to_dict()}
        )
        elapsed = time.monotonic() - started
        report(
            f"{label} {name} batch {batch_size} ({index}/{len(steps)}): "
            f"p50 {stats.p50_ms:.3f} ms, {stats.throughput_samples_per_s:.0f} samples/s; "
            f"elapsed {elapsed:.1f}s, ~{elapsed / index * (len(steps) - index):.1f}s left"
        )
    return measurements

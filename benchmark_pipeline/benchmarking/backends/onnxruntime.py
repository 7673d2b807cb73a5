"""The ONNX Runtime backend, for any ONNX model.

onnxruntime-gpu falls back to the CPU *silently* when the CUDA libraries are missing, even when only CUDA
was asked for, and on a CPU machine it still lists ``CUDAExecutionProvider`` as available. So the provider
is always read back from ``session.get_providers()``: ``device: cuda`` that lands on the CPU raises
:class:`ProviderMismatchError`, and ``device: auto`` records which provider it really got.

Inputs are whatever the model's signature names (``session.get_inputs()``); every output is computed (that
is the cost a caller pays), and :func:`~benchmark_pipeline.benchmarking.backends.primary_output` picks the
one compared and scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.backends import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    Feeds,
    ModelFileError,
    OpenRequest,
    ProviderMismatchError,
    primary_output,
)
from benchmark_pipeline.benchmarking.inputs import InputSpec, onnx_input_specs


@dataclass(frozen=True)
class OnnxBackend:
    """An ONNX Runtime session (a :class:`~benchmark_pipeline.benchmarking.backends.Backend`)."""

    session: ort.InferenceSession
    providers_requested: tuple[str, ...]
    provider_used: str
    model_path: Path

    @property
    def provider(self) -> str:
        return self.provider_used

    @property
    def route(self) -> str | None:
        return None

    def input_specs(self) -> list[InputSpec]:
        try:
            return onnx_input_specs(self.session.get_inputs(), str(self.model_path))
        except ValueError as error:
            raise ModelFileError(str(error)) from None

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run_all(self, feeds: Feeds) -> list[np.ndarray]:
        return list(self.session.run(None, dict(feeds)))

    def run(self, feeds: Feeds) -> np.ndarray:
        """The primary output for ``feeds``."""
        return primary_output(self.output_names, self.run_all(feeds))

    def timed_call(self, feeds: Feeds) -> Callable[[], object]:
        """Every output is computed: that is the cost a caller pays."""
        run_all = self.run_all  # bound once, outside the timed call
        return lambda: run_all(feeds)

    def environment(self) -> dict[str, Any]:
        return {
            "onnxruntime_providers_requested": list(self.providers_requested),
            "onnxruntime_providers_used": self.session.get_providers(),
        }


def open_model(request: OpenRequest) -> OnnxBackend:
    """The backend protocol's entry point: the trial's ``model.onnx``."""
    return open_onnx_session(request.model_dir / contract.ONNX_FILE, request.device, request.intra_op_threads)


def requested_providers(device: str) -> tuple[str, ...]:
    if device == "cpu":
        return (CPU_PROVIDER,)
    if device == "cuda":
        return (CUDA_PROVIDER,)
    return (CUDA_PROVIDER, CPU_PROVIDER) if CUDA_PROVIDER in ort.get_available_providers() else (CPU_PROVIDER,)


def open_onnx_session(model_path: Path, device: str, intra_op_threads: int) -> OnnxBackend:
    """An ONNX Runtime session for ``model_path`` on ``device`` (``cpu``, ``cuda`` or ``auto``)."""
    if not model_path.is_file():
        raise ModelFileError(f"ONNX model not found: {model_path}")
    requested = requested_providers(device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the CUDA fallback is detected below; its console warning is noise
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=list(requested))
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelFileError(f"cannot load ONNX model {model_path}: {type(error).__name__}: {error}") from None
    used = session.get_providers()[0]
    if device == "cuda" and used != CUDA_PROVIDER:
        raise ProviderMismatchError(
            f"device 'cuda' was requested but ONNX Runtime runs {model_path.name} on {used} "
            f"(providers in use: {session.get_providers()}); check the CUDA 13 / cuDNN 9 libraries"
        )
    return OnnxBackend(session, requested, used, model_path)

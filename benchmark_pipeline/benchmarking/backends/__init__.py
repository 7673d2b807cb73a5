"""What is benchmarked: an ONNX Runtime session or a PyTorch module, each loaded from the model files a
trial provides (``docs/hpo-contract.md``), on the provider actually used.

Each backend lives in its own module, imported only when a benchmark runs (importing this package loads
neither onnxruntime nor torch), and implements :class:`Backend`: the module's ``open_model(request)`` loads the
trial's model (:class:`OpenRequest`) and returns an object that reports its input signature where the model
has one, runs named NumPy inputs and returns the model's primary output as a NumPy array
(:func:`primary_output` picks the one output that is compared between backends and scored), and builds the
call that is timed. Adding a backend is adding its module and naming it in :data:`BACKEND_MODULES` (and its
model files in :mod:`~benchmark_pipeline.benchmarking.model_files`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from benchmark_pipeline.benchmarking.inputs import InputSpec

ONNXRUNTIME = "onnxruntime"
PYTORCH = "pytorch"
BACKENDS = (ONNXRUNTIME, PYTORCH)
#: The module implementing each backend (its ``open_model(request) -> Backend``), in the order they are opened.
BACKEND_MODULES = {
    ONNXRUNTIME: "benchmark_pipeline.benchmarking.backends.onnxruntime",
    PYTORCH: "benchmark_pipeline.benchmarking.backends.pytorch",
}
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
#: The output compared and scored when a model has several: this name when present, else the first.
PRIMARY_OUTPUT_NAME = "logits"


class ProviderMismatchError(RuntimeError):
    """The benchmark would run on another device than the config asked for."""


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not the expected model."""


def primary_output(names: Sequence[str], values: Sequence[np.ndarray]) -> np.ndarray:
    """The output named :data:`PRIMARY_OUTPUT_NAME`, else the first one."""
    index = list(names).index(PRIMARY_OUTPUT_NAME) if PRIMARY_OUTPUT_NAME in names else 0
    return values[index]


Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class OpenRequest:
    """What a backend's ``open_model`` gets: the trial's model folder and how to run it."""

    model_dir: Path
    trial_info: Mapping[str, Any]
    device: str
    intra_op_threads: int
    #: ``benchmark_config.pytorch.model_factory``, for backends that build the model by code
    model_factory: str | None = None


class Backend(Protocol):
    """A model loaded by one backend, on the provider it really runs on (never silently another one: a backend
    that lands elsewhere than the device asked for raises :class:`ProviderMismatchError` in ``open_model``)."""

    @property
    def provider(self) -> str:
        """The provider the model runs on (recorded with every measurement)."""
        ...

    @property
    def route(self) -> str | None:
        """How the model was loaded, when the backend has several ways (else ``None``)."""
        ...

    def input_specs(self) -> list[InputSpec] | None:
        """The model's input signature, or ``None`` when its files carry none."""
        ...

    def run(self, feeds: Feeds) -> np.ndarray:
        """The primary output for named NumPy inputs."""
        ...

    def timed_call(self, feeds: Feeds) -> Callable[[], object]:
        """The call that is timed for ``feeds``: inputs already where the model runs, nothing left to copy."""
        ...

    def environment(self) -> dict[str, Any]:
        """What the backend adds to the result's ``environment`` (providers requested and used, ...)."""
        ...


def open_backend(name: str, request: OpenRequest) -> Backend:
    """Import backend ``name``'s module (only now) and open the trial's model with it."""
    module = importlib.import_module(BACKEND_MODULES[name])
    backend: Backend = module.open_model(request)
    return backend


__all__ = [
    "BACKENDS",
    "BACKEND_MODULES",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "ONNXRUNTIME",
    "PRIMARY_OUTPUT_NAME",
    "PYTORCH",
    "Backend",
    "Feeds",
    "ModelFileError",
    "OpenRequest",
    "ProviderMismatchError",
    "open_backend",
    "primary_output",
]

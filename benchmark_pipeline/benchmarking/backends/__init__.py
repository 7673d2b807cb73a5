"""What is benchmarked: an ONNX Runtime session or a PyTorch module, each loaded from the model files a
trial provides (``docs/hpo-contract.md``), on the provider actually used.

Each backend lives in its own module, imported only when a benchmark runs (importing this package loads
neither onnxruntime nor torch). A backend opens a model, reports its input signature where the model has
one, runs named NumPy inputs and returns the model's outputs as NumPy arrays; :func:`primary_output`
picks the one output that is compared between backends and scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ONNXRUNTIME = "onnxruntime"
PYTORCH = "pytorch"
BACKENDS = (ONNXRUNTIME, PYTORCH)
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


__all__ = [
    "BACKENDS",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "ONNXRUNTIME",
    "PRIMARY_OUTPUT_NAME",
    "PYTORCH",
    "ModelFileError",
    "ProviderMismatchError",
    "primary_output",
]

Feeds = Mapping[str, np.ndarray]

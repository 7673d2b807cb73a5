"""What is benchmarked: an ONNX Runtime session or a PyTorch module, on the provider actually used.

onnxruntime-gpu falls back to the CPU *silently* when the CUDA libraries are missing, even when only CUDA
was asked for, and on a CPU machine it still lists ``CUDAExecutionProvider`` as available. So the provider
is always read back from ``session.get_providers()``: ``device: cuda`` that lands on the CPU raises
:class:`ProviderMismatchError`, and ``device: auto`` records which provider it really got.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

EXPECTED_INPUTS = ("input_ids", "attention_mask")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class ProviderMismatchError(RuntimeError):
    """The benchmark would run on another device than the config asked for."""


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not the expected model."""


@dataclass(frozen=True)
class OnnxBackend:
    session: ort.InferenceSession
    providers_requested: tuple[str, ...]
    provider_used: str

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return logits


def open_onnx_session(model_path: Path, device: str, intra_op_threads: int) -> OnnxBackend:
    """An ONNX Runtime session for ``model_path`` on ``device`` (``cpu``, ``cuda`` or ``auto``)."""
    if not model_path.is_file():
        raise ModelFileError(f"ONNX model not found: {model_path}")
    available = ort.get_available_providers()
    if device == "cpu":
        requested: tuple[str, ...] = (CPU_PROVIDER,)
    elif device == "cuda":
        requested = (CUDA_PROVIDER,)
    else:
        requested = (CUDA_PROVIDER, CPU_PROVIDER) if CUDA_PROVIDER in available else (CPU_PROVIDER,)
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
    inputs = tuple(i.name for i in session.get_inputs())
    if sorted(inputs) != sorted(EXPECTED_INPUTS):
        raise ModelFileError(f"{model_path} has inputs {list(inputs)}; expected {list(EXPECTED_INPUTS)}")
    return OnnxBackend(session, requested, used)


def torch_device(device: str) -> torch.device:
    """``cpu``; ``cuda`` (error when torch has no usable GPU); ``auto`` → CUDA when usable, else CPU."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ProviderMismatchError("device 'cuda' was requested but torch.cuda.is_available() is False")
        return torch.device("cuda")
    if device == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Temporarily set PyTorch's intra-op thread count (0 keeps the library default)."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

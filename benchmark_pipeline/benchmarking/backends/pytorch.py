"""The PyTorch backend, with no model class of this project's: the module comes from the trial's files.

Routes, in this order of preference (the first whose files the trial has wins; see
:func:`~benchmark_pipeline.benchmarking.model_files.find_torch_model`):

1. ``model.pt2``: a ``torch.export`` program, ``torch.export.load(path).module()``. Its outputs must be
   tensors, tuples or dicts (``torch.export`` cannot load a Hugging Face ``ModelOutput`` back: export with
   ``return_dict=False``);
2. ``config.json`` + ``model.safetensors``: a Hugging Face checkpoint folder, loaded with the class its
   ``config.json`` names in ``architectures`` (needs the ``[hf]`` extra: ``transformers``);
3. ``benchmark_config.pytorch.model_factory: "package.module:function"``: ``function(trial_info, model_dir)``
   returns an ``nn.Module``, typically building the architecture and loading ``model.pt`` (a ``state_dict``)
   with ``torch.load(..., weights_only=True)``.

Nothing is unpickled as code: ``torch.export`` programs and safetensors are data, and a factory that loads a
``state_dict`` is expected to pass ``weights_only=True`` (:func:`load_state_dict` does).

The module is called with the named inputs as keyword arguments (a ``torch.export`` program traced with
positional inputs gets those positionally, in its traced order). Its output is read as a tensor; a tuple or
list (first element); or a mapping or ``ModelOutput`` (``logits`` when present, else the first value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.backends import (
    PRIMARY_OUTPUT_NAME,
    Feeds,
    ModelFileError,
    OpenRequest,
    ProviderMismatchError,
)
from benchmark_pipeline.benchmarking.metrics import load_callable
from benchmark_pipeline.benchmarking.model_files import (
    ROUTE_FACTORY,
    ROUTE_HUGGING_FACE,
    ROUTE_TORCH_EXPORT,
    TorchModelFiles,
    find_torch_model,
)

HF_EXTRA_HINT = "install the Hugging Face extra: pip install 'benchmark_pipeline[hf]'"


def output_tensor(output: Any, where: str) -> torch.Tensor:
    """The tensor to compare and time from whatever the module returned (see the module docstring)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) or hasattr(output, "keys"):  # dicts and transformers' ModelOutput
        keys = list(output.keys())
        if not keys:
            raise ModelFileError(f"{where} returned an empty mapping")
        return output_tensor(output[PRIMARY_OUTPUT_NAME] if PRIMARY_OUTPUT_NAME in keys else output[keys[0]], where)
    if isinstance(output, (tuple, list)) and output:
        return output_tensor(output[0], where)
    raise ModelFileError(
        f"{where} returned {type(output).__name__}; expected a tensor, a tuple or a mapping of tensors"
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` as data only (``weights_only=True``): for model factories."""
    if not path.is_file():
        raise ModelFileError(f"PyTorch checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    except Exception as error:
        raise ModelFileError(f"cannot load PyTorch checkpoint {path}: {type(error).__name__}: {error}") from None


def _load_export(path: Path) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """The program's module, and the names of the inputs it takes positionally: a program exported with
    positional example inputs refuses keywords, so those are passed in the order it was traced with."""
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as error:
        raise ModelFileError(f"cannot load torch.export program {path}: {type(error).__name__}: {error}") from None
    positional_count = len(program.example_inputs[0]) if program.example_inputs else 0
    return module, tuple(program.graph_signature.user_inputs[:positional_count])


def _load_hugging_face(folder: Path) -> torch.nn.Module:
    try:
        import transformers
    except ImportError:
        raise ModelFileError(
            f"{folder} is a Hugging Face checkpoint; to benchmark it with PyTorch, {HF_EXTRA_HINT}"
        ) from None
    config_path = folder / contract.HF_CONFIG_FILE
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ModelFileError(
            f"cannot read Hugging Face config {config_path}: {type(error).__name__}: {error}"
        ) from None
    architectures = list(getattr(config, "architectures", None) or [])
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if model_class is None:
        raise ModelFileError(
            f"{config_path} names no model class transformers knows in 'architectures' (got {architectures}); save the model with save_pretrained()"
        )
    try:
        return model_class.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)  # type: ignore[no-any-return]
    except Exception as error:
        raise ModelFileError(
            f"cannot load Hugging Face checkpoint {folder} as {architectures[0]}: {type(error).__name__}: {error}"
        ) from None


def _load_from_factory(import_string: str, trial_info: Mapping[str, Any], folder: Path) -> torch.nn.Module:
    factory = load_callable(import_string, "benchmark_config.pytorch.model_factory")
    try:
        module = factory(dict(trial_info), folder)
    except ModelFileError:
        raise
    except Exception as error:
        raise ModelFileError(
            f"model_factory {import_string} failed for trial {trial_info.get('trial_id')} in {folder}: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelFileError(f"model_factory {import_string} returned {type(module).__name__}, not a torch.nn.Module")
    return module


@dataclass(frozen=True)
class TorchBackend:
    """A PyTorch module on its device (a :class:`~benchmark_pipeline.benchmarking.backends.Backend`)."""

    module: torch.nn.Module
    device: torch.device
    route: str
    #: inputs passed positionally, in this order (``torch.export`` programs traced with positional inputs)
    positional: tuple[str, ...] = ()

    @property
    def provider(self) -> str:
        return f"torch:{self.device.type}"

    def to_device(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for name, array in feeds.items()}

    def forward(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The primary output for inputs already on the device (what is timed); waits for the GPU."""
        args = [tensors[name] for name in self.positional]
        kwargs = {name: value for name, value in tensors.items() if name not in self.positional}
        with torch.inference_mode():
            output = output_tensor(self.module(*args, **kwargs), f"the PyTorch model ({self.route})")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return output

    def run(self, feeds: Feeds) -> np.ndarray:
        return self.forward(self.to_device(feeds)).float().cpu().numpy()

    def input_specs(self) -> None:
        """A PyTorch module carries no input signature (inputs come from the test data or the ONNX model)."""
        return None

    def timed_call(self, feeds: Feeds) -> Callable[[], object]:
        """The inputs are moved to the device once, here; the timed call runs the module on them."""
        forward, tensors = self.forward, self.to_device(feeds)
        return lambda: forward(tensors)

    def environment(self) -> dict[str, Any]:
        return {}


def open_model(request: OpenRequest) -> TorchBackend:
    """The backend protocol's entry point: the first PyTorch route the trial's files allow."""
    files = find_torch_model(request.model_dir, request.model_factory)
    if files is None:  # plan_backends runs this backend only when the files are there
        raise ModelFileError(f"no PyTorch model files in {request.model_dir}")
    return open_torch_model(files, request.trial_info, request.device)


def open_torch_model(files: TorchModelFiles, trial_info: Mapping[str, Any], device: str) -> TorchBackend:
    """Load the module by ``files.route`` and move it to ``device`` (``cpu``, ``cuda`` or ``auto``)."""
    target = torch_device(device)
    positional: tuple[str, ...] = ()
    if files.route == ROUTE_TORCH_EXPORT:
        module, positional = _load_export(files.paths[0])
    elif files.route == ROUTE_HUGGING_FACE:
        module = _load_hugging_face(files.folder)
    elif files.route == ROUTE_FACTORY:
        assert files.factory is not None
        module = _load_from_factory(files.factory, trial_info, files.folder)
    else:
        raise ValueError(f"unknown PyTorch model route {files.route!r}")
    if files.route != ROUTE_TORCH_EXPORT:
        module.eval()  # exported programs are already traced in eval mode and refuse .eval()
    return TorchBackend(module.to(target), target, files.route, positional)


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

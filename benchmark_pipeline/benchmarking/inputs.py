"""What a model is fed: named input arrays, from the user's test data or synthesized from the model's signature.

Nothing here knows a model's input names. An :class:`InputSpec` says what one input is (name, element type,
shape with static and symbolic dimensions); specs come from the ONNX model's own signature
(``session.get_inputs()``); without an ONNX model, the test data's own arrays are the inputs.

Test data (``benchmark_config.test_data``, or the ``test_data_path`` argument), one of:

* ``.npz``: one array per model input, named as the input, with examples along axis 0; an optional
  ``labels`` array (one label per example, or one per token). Arrays are used as they are.
* ``.jsonl``: one JSON object per line, mapping input names to one example each (a number or nested lists,
  without the batch axis) plus an optional ``labels``. Sequences of unequal length are padded with 0 to
  ``max_length`` (labels with ``-100``, ignored by the metrics) or truncated to it. When the model takes an
  ``attention_mask`` the lines do not give, it is 1 on the real tokens of the first input and 0 on padding.

Synthetic inputs (no test data): a symbolic dimension at position 0 is the batch size, any other symbolic
dimension is ``max_length``, static dimensions are kept. Integer inputs are drawn uniformly from
``[0, synthetic_int_high)`` (default 2, safe for any vocabulary), except that inputs whose name contains
``mask`` are all ones; floats are standard normal; booleans are True. Seeded: the same config gives the same
arrays. Synthetic inputs carry no labels, so no quality metric is computed from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Labels at padded positions: ignored by the metrics (PyTorch's ``CrossEntropyLoss`` convention).
IGNORE_LABEL = -100
LABELS_KEY = "labels"
ATTENTION_MASK = "attention_mask"
#: Rows synthesized to compare the backends' outputs when there is no test data.
SYNTHETIC_EXAMPLES = 8

_ONNX_ELEMENT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class InputSpec:
    """One model input: ``shape`` holds ints (static) and strings or ``None`` (symbolic)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | str | None, ...]

    def concrete_shape(self, batch_size: int, max_length: int) -> tuple[int, ...]:
        return tuple(
            dim if isinstance(dim, int) and dim > 0 else (batch_size if axis == 0 else max_length)
            for axis, dim in enumerate(self.shape)
        )


def onnx_input_specs(session_inputs: Sequence[Any], where: str) -> list[InputSpec]:
    """Specs from ``session.get_inputs()``; an element type outside ints, floats and bool is refused."""
    specs = []
    for node in session_inputs:
        dtype = _ONNX_ELEMENT_TYPES.get(node.type)
        if dtype is None:
            raise ValueError(
                f"{where}: input {node.name!r} has element type {node.type}; supported: {sorted(_ONNX_ELEMENT_TYPES)}"
            )
        specs.append(InputSpec(node.name, dtype, tuple(node.shape)))
    return specs


@dataclass(frozen=True)
class ModelInputs:
    """Named arrays with examples along axis 0, and labels when the data has them."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(array[indices]) for name, array in self.arrays.items()}

    def batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """The first ``batch_size`` examples (repeated when there are fewer)."""
        return self.rows(np.resize(np.arange(len(self)), batch_size))

    def chunks(self, size: int) -> list[dict[str, np.ndarray]]:
        return [self.rows(np.arange(start, min(start + size, len(self)))) for start in range(0, len(self), size)]

    def token_mask(self) -> np.ndarray | None:
        """Where the real (non-padding) tokens are, from the attention mask when there is one."""
        mask = self.arrays.get(ATTENTION_MASK)
        return mask.astype(bool) if mask is not None else None


def synthesize_inputs(
    specs: Sequence[InputSpec], examples: int, max_length: int, int_high: int, seed: int = 0
) -> ModelInputs:
    """Seeded synthetic inputs for ``specs`` (see the module docstring); no labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape = spec.concrete_shape(examples, max_length)
        if spec.dtype == np.bool_:
            arrays[spec.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(spec.dtype, np.integer):
            if "mask" in spec.name:
                arrays[spec.name] = np.ones(shape, dtype=spec.dtype)
            else:
                arrays[spec.name] = rng.integers(0, int_high, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return ModelInputs(arrays, None, f"synthetic ({examples} examples from the model signature)")


def _pad(values: list[Any], max_length: int, fill: int, where: str) -> np.ndarray:
    lengths = {len(v) if isinstance(v, list) else -1 for v in values}
    if -1 in lengths:  # scalars (one per example): nothing to pad
        if lengths != {-1}:
            raise ValueError(f"{where}: some examples are lists and some are not")
        return np.asarray(values)
    padded = np.full((len(values), max_length), fill, dtype=np.asarray(values[0][:1] or [0]).dtype)
    for row, value in enumerate(values):
        clipped = np.asarray(value[:max_length])
        if clipped.ndim != 1:
            raise ValueError(
                f"{where}: example {row} is nested {clipped.ndim} deep; only sequences of numbers are padded"
            )
        padded[row, : len(clipped)] = clipped
    return padded


_Columns = tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]  # inputs, labels, derived mask


def _read_jsonl(path: Path, max_length: int) -> _Columns:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read test data {path}: {error}") from None
    columns: dict[str, list[Any]] = {}
    names: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(example, dict) or not example:
            raise ValueError(f"{path}:{number}: expected an object of named inputs, got {type(example).__name__}")
        if names is None:
            names = sorted(example)
        elif sorted(example) != names:
            raise ValueError(f"{path}:{number}: has fields {sorted(example)}, the first line has {names}")
        for name, value in example.items():
            columns.setdefault(name, []).append(value)
    if not columns:
        raise ValueError(f"{path} holds no examples")
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = _pad(values, max_length, IGNORE_LABEL if name == LABELS_KEY else 0, f"{path} field {name!r}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: field {name!r} is not numeric ({error})") from None
    first_input = next((columns[n] for n in sorted(columns) if n != LABELS_KEY), None)
    if first_input is None:
        raise ValueError(f"{path} holds only labels, no model input")
    labels = arrays.pop(LABELS_KEY, None)
    mask = None
    if ATTENTION_MASK not in arrays and all(isinstance(v, list) for v in first_input):
        mask = np.zeros((len(first_input), max_length), dtype=np.int64)
        for row, value in enumerate(first_input):
            mask[row, : min(len(value), max_length)] = 1
    return arrays, labels, mask


def _read_npz(path: Path) -> _Columns:
    try:
        with np.load(path, allow_pickle=False) as archive:  # no pickles: a data file is never code
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read test data {path}: {error}") from None
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    labels = arrays.pop(LABELS_KEY, None)
    counts = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(f"{path}: every array needs the same number of examples along axis 0, got {counts}")
    return arrays, labels, None


def load_test_data(path: Path, specs: Sequence[InputSpec] | None, max_length: int) -> ModelInputs:
    """The test data at ``path`` (``.npz`` or ``.jsonl``), keeping the inputs ``specs`` name (every one of
    them must be there) in the model's element types; without specs, every array but ``labels``."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays, labels, derived_mask = _read_npz(path)
    elif path.suffix == ".jsonl":
        arrays, labels, derived_mask = _read_jsonl(path, max_length)
    else:
        raise ValueError(f"test data {path} must be a .npz or .jsonl file")
    if specs is None:
        chosen = arrays
    else:
        chosen = {}
        for spec in specs:
            if spec.name in arrays:
                chosen[spec.name] = arrays[spec.name].astype(spec.dtype, copy=False)
            elif spec.name == ATTENTION_MASK and derived_mask is not None:
                chosen[spec.name] = derived_mask.astype(spec.dtype, copy=False)
            else:
                raise ValueError(
                    f"test data {path} has no input {spec.name!r}; the model takes {[s.name for s in specs]}, the file has {sorted(arrays)}"
                )
    if labels is not None and labels.shape[0] != next(iter(chosen.values())).shape[0]:
        raise ValueError(f"{path}: {labels.shape[0]} labels for {next(iter(chosen.values())).shape[0]} examples")
    return ModelInputs(chosen, labels, str(path))

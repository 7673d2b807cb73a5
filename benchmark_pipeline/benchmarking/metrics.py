"""Task metrics, computed only when the test data has labels (they are never made up from synthetic inputs).

``benchmark_config.task`` chooses:

* ``token-classification``: token-level macro-F1 (``test_macro_f1``) over the label ids, ignoring positions
  labelled ``-100`` (padding); the output read is the logits, shape (batch, sequence, labels);
* ``sequence-classification``: accuracy (``test_accuracy``) of the arg-max over the last axis, labels of
  shape (batch,);
* ``"package.module:function"``: ``function(outputs, labels)`` → ``{name: float}`` (or one float, recorded
  as ``test_metric``), with ``outputs`` the model's primary output as a NumPy array.

Without ``task`` it is inferred from the labels: one per token (same shape as the output minus its last
axis) → token classification; one per example → sequence classification.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmark_pipeline.benchmarking.inputs import IGNORE_LABEL

TOKEN_CLASSIFICATION = "token-classification"
SEQUENCE_CLASSIFICATION = "sequence-classification"


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Token-level macro-F1 over ``num_labels`` labels, ignoring positions labelled ``-100``.

    A label absent from both predictions and references is left out of the mean (its F1 is undefined).
    """
    mask = labels != IGNORE_LABEL
    predicted, reference = predictions[mask], labels[mask]
    scores = []
    for label in range(num_labels):
        true_positive = int(np.sum((predicted == label) & (reference == label)))
        predicted_count = int(np.sum(predicted == label))
        reference_count = int(np.sum(reference == label))
        if predicted_count == 0 and reference_count == 0:
            continue
        scores.append(2 * true_positive / (predicted_count + reference_count))
    return float(np.mean(scores)) if scores else 0.0


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels)) if labels.size else 0.0


def load_callable(import_string: str, what: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function; ``ValueError`` naming ``what`` when it cannot be found."""
    module_name, _, attribute = import_string.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{what} {import_string!r} cannot be imported: {type(error).__name__}: {error}") from None
    if not callable(function):
        raise ValueError(f"{what} {import_string!r} is not callable")
    return function  # type: ignore[no-any-return]


def infer_task(outputs: np.ndarray, labels: np.ndarray) -> str:
    return TOKEN_CLASSIFICATION if labels.shape == outputs.shape[:-1] and labels.ndim >= 2 else SEQUENCE_CLASSIFICATION


def task_metrics(task: str | None, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of ``task`` (see the module docstring) for ``outputs`` against ``labels``."""
    chosen = task or infer_task(outputs, labels)
    if chosen == TOKEN_CLASSIFICATION:
        if labels.shape != outputs.shape[:-1]:
            raise ValueError(
                f"token-classification labels have shape {labels.shape}; the output has shape {outputs.shape}"
            )
        return {"test_macro_f1": macro_f1(outputs.argmax(-1), labels, int(outputs.shape[-1]))}
    if chosen == SEQUENCE_CLASSIFICATION:
        if labels.shape != outputs.shape[:1]:
            raise ValueError(
                f"sequence-classification labels have shape {labels.shape}; expected one per example, {outputs.shape[:1]}"
            )
        return {"test_accuracy": accuracy(outputs.argmax(-1), labels)}
    value = load_callable(chosen, "benchmark_config.task")(outputs, labels)
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return {"test_metric": float(value)}

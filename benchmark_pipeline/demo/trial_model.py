"""One demo trial's model: built, trained, scored on the validation split and written to its trial folder.

The sweep imports this module only when it trains a trial, so a sweep whose trials are all finished (every
rerun of the demo) loads no torch, onnx or onnxruntime.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark_pipeline import contract
from benchmark_pipeline.demo.dataset import LABELS, TokenBatch
from benchmark_pipeline.demo.models import build_model, model_meta
from benchmark_pipeline.demo.onnx_export import export_onnx
from benchmark_pipeline.demo.training import macro_f1, predict, train_model


@dataclass(frozen=True)
class TrainedTrial:
    """What the sweep records of a trained trial: the objective value and the trial's metrics."""

    value: float
    train_seconds: float
    metrics: dict[str, float]


def architecture(vocab_size: int, max_length: int) -> dict[str, Any]:
    """What ``demo.models.load_trial_model`` needs to rebuild the architecture (``trial_meta.json``'s ``model``)."""
    return model_meta(vocab_size, len(LABELS), max_length)


def train_trial(
    *,
    backbone: str,
    hyperparameters: Mapping[str, Any],
    seed: int,
    shape: tuple[int, int],
    epochs: int,
    batch_size: int,
    train: TokenBatch,
    validation: TokenBatch,
    metric_name: str,
    folder: Path,
) -> TrainedTrial:
    """Train with ``seed``, score macro-F1 on ``validation``, write ``model.onnx`` and ``model.pt`` to ``folder``.

    ``shape`` is (vocab size, max length)."""
    vocab_size, max_length = shape
    started = time.monotonic()
    torch.manual_seed(seed)
    model = build_model(backbone, dict(hyperparameters), vocab_size, len(LABELS), max_length)
    losses = train_model(model, train, dict(hyperparameters), epochs, batch_size, seed)
    value = macro_f1(predict(model, validation), validation.labels)
    train_seconds = time.monotonic() - started
    folder.mkdir(parents=True, exist_ok=True)
    export_error = export_onnx(model, folder / contract.ONNX_FILE, max_length)
    torch.save(model.state_dict(), folder / contract.CHECKPOINT_FILE)
    metrics = {
        metric_name: value,
        "train_loss": losses[-1],
        "train_seconds": train_seconds,
        "onnx_max_abs_diff": export_error,
        "num_parameters": float(sum(p.numel() for p in model.parameters())),
    }
    return TrainedTrial(value=value, train_seconds=train_seconds, metrics=metrics)

"""Train and evaluate one token-classification model on the CPU, deterministically.

With the same seed, data, hyperparameters and ``torch`` thread count, training is bit-reproducible on the
CPU; a different thread count or CPU instruction set can change the last bits of the loss (and so, rarely,
the metric). GPU training is not attempted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark_pipeline.benchmarking import metrics
from benchmark_pipeline.demo.dataset import IGNORE_INDEX, LABELS, TokenBatch


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int = len(LABELS)) -> float:
    """The core's token-level macro-F1 (:func:`benchmark_pipeline.benchmarking.metrics.macro_f1`) over the
    demo's labels: the sweep's objective and the benchmark's ``test_macro_f1`` are one computation."""
    return metrics.macro_f1(predictions, labels, num_labels)


def predict(model: nn.Module, data: TokenBatch, batch_size: int = 256) -> np.ndarray:
    """Arg-max label ids, shape (n, max_length)."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            ids = torch.from_numpy(data.input_ids[start : start + batch_size])
            mask = torch.from_numpy(data.attention_mask[start : start + batch_size])
            outputs.append(model(ids, mask).argmax(dim=-1).numpy())
    return np.concatenate(outputs)


def train_model(
    model: nn.Module, train: TokenBatch, hyperparameters: Mapping[str, Any], epochs: int, batch_size: int, seed: int
) -> list[float]:
    """Train with AdamW and cross-entropy; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(hyperparameters.get("learning_rate", 1e-3)),
        weight_decay=float(hyperparameters.get("weight_decay", 0.0)),
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    ids, mask, labels = (torch.from_numpy(a) for a in (train.input_ids, train.attention_mask, train.labels))
    epoch_losses = []
    for _ in range(epochs):
        model.train()
        order = torch.from_numpy(generator.permutation(len(train)))
        losses = []
        for start in range(0, len(train), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            logits = model(ids[batch], mask[batch])
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels[batch].reshape(-1))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
    model.eval()
    return epoch_losses

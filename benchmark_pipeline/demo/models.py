"""Small PyTorch token-classification backbones, registered by name, with clearly different costs.

Every model maps ``(input_ids, attention_mask)`` — both int64 of shape (batch, sequence) — to logits of
shape (batch, sequence, num_labels). They are written with plain ops (no fused fast paths) so that the
legacy ONNX exporter produces graphs with dynamic batch and sequence axes.

Hyperparameters the models read: ``width`` (embedding/hidden size) and ``dropout``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.backends.pytorch import load_state_dict
from benchmark_pipeline.demo.settings import DEMO_BACKBONES


class _SelfAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, ff_multiplier: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, ff_multiplier * width), nn.GELU(), nn.Linear(ff_multiplier * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        head_dim = width // self.heads
        q, k, v = self.qkv(hidden).reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + additive_mask
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
        hidden = self.norm1(hidden + self.dropout(self.out(attended)))
        normalized: torch.Tensor = self.norm2(hidden + self.dropout(self.ff(hidden)))
        return normalized


class TransformerTagger(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        width: int,
        layers: int,
        heads: int,
        ff_multiplier: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Embedding(max_length, width)
        self.blocks = nn.ModuleList(_SelfAttentionBlock(width, heads, ff_multiplier, dropout) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.dropout(self.embed(input_ids) + self.position(positions))
        # Padded keys get a large negative score; (batch, 1, 1, keys) broadcasts over heads and queries.
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -1e4
        for block in self.blocks:
            hidden = block(hidden, additive_mask)
        logits: torch.Tensor = self.classifier(hidden)
        return logits


class BiLstmTagger(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int, width: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.lstm = nn.LSTM(width, width, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * width, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embed(input_ids)) * attention_mask.unsqueeze(-1).to(torch.float32)
        # Explicit initial states sized from the input keep the exported LSTM's batch axis dynamic.
        zeros = embedded.new_zeros(2, input_ids.shape[0], self.lstm.hidden_size)
        encoded, _ = self.lstm(embedded, (zeros, zeros))
        logits: torch.Tensor = self.classifier(self.dropout(encoded))
        return logits


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: ``build(hyperparameters, vocab_size, num_labels, max_length)`` → module."""

    name: str
    description: str
    build: Callable[[Mapping[str, Any], int, int, int], nn.Module]


def _transformer(
    layers: int, heads: int, ff_multiplier: int
) -> Callable[[Mapping[str, Any], int, int, int], nn.Module]:
    def build(hp: Mapping[str, Any], vocab_size: int, num_labels: int, max_length: int) -> nn.Module:
        return TransformerTagger(
            vocab_size,
            num_labels,
            max_length,
            int(hp.get("width", 32)),
            layers,
            heads,
            ff_multiplier,
            float(hp.get("dropout", 0.1)),
        )

    return build


def _bilstm(hp: Mapping[str, Any], vocab_size: int, num_labels: int, max_length: int) -> nn.Module:
    return BiLstmTagger(vocab_size, num_labels, int(hp.get("width", 32)), float(hp.get("dropout", 0.1)))


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("tiny_transformer", "1 self-attention layer, 2 heads, 2x feed-forward", _transformer(1, 2, 2)),
        BackboneSpec("deep_transformer", "4 self-attention layers, 4 heads, 4x feed-forward", _transformer(4, 4, 4)),
        BackboneSpec("bilstm", "1 bidirectional LSTM layer", _bilstm),
    )
}


assert tuple(sorted(BACKBONES)) == tuple(sorted(DEMO_BACKBONES)), "demo.settings.DEMO_BACKBONES lists the registry"

#: Key of ``trial_meta.json`` holding what :func:`build_model` needs besides the hyperparameters.
MODEL_META_KEY = "model"


def build_model(
    backbone: str, hyperparameters: Mapping[str, Any], vocab_size: int, num_labels: int, max_length: int
) -> nn.Module:
    """Build the registered ``backbone``; raises ``ValueError`` naming the known backbones otherwise."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; registered backbones: {sorted(BACKBONES)}")
    return BACKBONES[backbone].build(hyperparameters, vocab_size, num_labels, max_length)


def model_meta(vocab_size: int, num_labels: int, max_length: int) -> dict[str, int]:
    return {"vocab_size": vocab_size, "num_labels": num_labels, "max_length": max_length}


def load_trial_model(trial_info: Mapping[str, Any], model_dir: Path) -> nn.Module:
    """The benchmark's ``model_factory`` for demo trials: rebuild the backbone from ``trial_meta.json`` (its
    hyperparameters and model dimensions) and load ``model.pt`` as data (``weights_only=True``)."""
    meta_path = Path(model_dir) / contract.TRIAL_META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dims = meta[MODEL_META_KEY]
        model = build_model(
            meta["backbone"],
            meta["hyperparameters"],
            int(dims["vocab_size"]),
            int(dims["num_labels"]),
            int(dims["max_length"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{meta_path} does not describe a demo model: {type(error).__name__}: {error}") from None
    checkpoint = Path(model_dir) / contract.CHECKPOINT_FILE
    try:
        model.load_state_dict(load_state_dict(checkpoint))
    except RuntimeError as error:
        raise ValueError(f"cannot load PyTorch checkpoint {checkpoint}: {error}") from None
    return model

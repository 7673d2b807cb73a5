"""A deterministic synthetic token-classification dataset (NER-style BIO tags).

Sentences are sequences of token ids. Entities are spans of "name" tokens; a third of the name tokens are
*ambiguous* (they may belong to any entity type), and an entity's type is told by the trigger token just
before it (``mr`` → PER, ``in`` → LOC, ``at`` → ORG) — so a model must read context, not only the token,
which makes backbones and hyperparameters matter.

Token id 0 is padding. Labels follow :data:`LABELS`; padded positions carry :data:`IGNORE_INDEX`.
The data depends only on ``data_config`` (seed, sizes, vocabulary size, max_length): the same config gives
byte-identical files on any machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark_pipeline.hashing import data_fingerprint
from benchmark_pipeline.layout import RootLayout

LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
IGNORE_INDEX = -100
PAD_ID = 0
_ENTITY_TYPES = ("PER", "LOC", "ORG")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetPaths:
    """Where one materialized dataset lives; ``test`` is the ``test_data_path`` benchmarks read."""

    directory: Path
    train: Path
    validation: Path
    test: Path
    fingerprint: str

    def split(self, name: str) -> Path:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


@dataclass(frozen=True)
class TokenBatch:
    """A split as padded arrays: ``input_ids``/``attention_mask``/``labels`` of shape (n, max_length)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _vocabulary_layout(vocab_size: int) -> dict[str, Any]:
    # 1..3 triggers, then filler words, then per-type names and a shared ambiguous-name block.
    triggers = {"PER": 1, "LOC": 2, "ORG": 3}
    first_name = 4 + vocab_size // 2
    block = (vocab_size - first_name) // 4
    names = {t: np.arange(first_name + i * block, first_name + (i + 1) * block) for i, t in enumerate(_ENTITY_TYPES)}
    ambiguous = np.arange(first_name + 3 * block, vocab_size)
    return {"triggers": triggers, "filler": np.arange(4, first_name), "names": names, "ambiguous": ambiguous}


def _generate_sentence(
    rng: np.random.Generator, layout: dict[str, Any], max_length: int
) -> tuple[list[int], list[int]]:
    length = int(rng.integers(max(6, max_length // 3), max_length + 1))
    tokens: list[int] = []
    tags: list[int] = []
    while len(tokens) < length:
        if rng.random() < 0.25 and len(tokens) + 3 <= length:
            kind = _ENTITY_TYPES[int(rng.integers(0, 3))]
            # A trigger precedes 80% of entities; without it, unambiguous names still tell the type.
            if rng.random() < 0.8:
                tokens.append(layout["triggers"][kind])
                tags.append(LABELS.index("O"))
            span = int(rng.integers(1, 3))
            for position in range(span):
                if len(tokens) >= length:
                    break
                pool = layout["ambiguous"] if rng.random() < 0.33 else layout["names"][kind]
                tokens.append(int(rng.choice(pool)))
                tags.append(LABELS.index(("B-" if position == 0 else "I-") + kind))
        else:
            tokens.append(int(rng.choice(layout["filler"])))
            tags.append(LABELS.index("O"))
    return tokens[:length], tags[:length]


def generate_split(data_config: Mapping[str, Any], split: str) -> list[dict[str, list[int]]]:
    """Generate one split's examples (``{"input_ids": [...], "labels": [...]}``) deterministically."""
    offset = SPLITS.index(split)
    rng = np.random.default_rng([int(data_config["seed"]), offset])
    layout = _vocabulary_layout(int(data_config["vocab_size"]))
    size = int(data_config[f"{split}_size"])
    return [
        dict(zip(("input_ids", "labels"), _generate_sentence(rng, layout, int(data_config["max_length"])), strict=True))
        for _ in range(size)
    ]


def dataset_directory(data_config: Mapping[str, Any], root_dir: Path) -> Path:
    local_path = data_config.get("local_path")
    if local_path:
        path = Path(local_path).expanduser()
        return path if path.is_absolute() else root_dir / path
    return RootLayout(root_dir).data_dir / f"{data_config['name']}-{data_fingerprint(data_config)}"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_dataset(data_config: Mapping[str, Any], root_dir: Path) -> DatasetPaths:
    """Write train/validation/test JSONL files plus ``dataset.json``; a no-op when they already match.

    ``dataset.json`` is written last and records the fingerprint, so a half-written dataset is rewritten.
    """
    fingerprint = data_fingerprint(data_config)
    directory = dataset_directory(data_config, root_dir)
    train, validation, test = (directory / f"{split}.jsonl" for split in SPLITS)
    paths = DatasetPaths(directory, train, validation, test, fingerprint=fingerprint)
    meta_path = directory / "dataset.json"
    if meta_path.exists():
        try:
            if json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint") == fingerprint and all(
                paths.split(s).exists() for s in SPLITS
            ):
                return paths
        except (OSError, json.JSONDecodeError):
            pass  # rewritten below
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = "".join(
            json.dumps(example, separators=(",", ":")) + "\n" for example in generate_split(data_config, split)
        )
        _write_atomically(paths.split(split), lines)
    meta = {
        "fingerprint": fingerprint,
        "name": data_config["name"],
        "version": str(data_config["version"]),
        "labels": list(LABELS),
        "vocab_size": int(data_config["vocab_size"]),
        "max_length": int(data_config["max_length"]),
        "sizes": {s: int(data_config[f"{s}_size"]) for s in SPLITS},
    }
    _write_atomically(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return paths


def load_split(path: str | Path, max_length: int) -> TokenBatch:
    """Read a JSONL split and pad/truncate every example to ``max_length``.

    Raises ``ValueError`` naming the file and line for malformed lines, and when the file holds no examples.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read test data {path}: {error}") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            ids, labels = example["input_ids"], example["labels"]
            if not ids or len(ids) != len(labels) or not all(isinstance(i, int) for i in ids):
                raise ValueError("input_ids and labels must be non-empty integer lists of equal length")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: malformed example ({error})") from None
        examples.append((ids[:max_length], labels[:max_length]))
    if not examples:
        raise ValueError(f"{path} holds no examples")
    count = len(examples)
    input_ids = np.full((count, max_length), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((count, max_length), dtype=np.int64)
    label_array = np.full((count, max_length), IGNORE_INDEX, dtype=np.int64)
    for row, (ids, labels) in enumerate(examples):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        label_array[row, : len(labels)] = labels
    return TokenBatch(input_ids, attention_mask, label_array)

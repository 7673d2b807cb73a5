"""Partition definitions, shared by assets, sensors and schedules.

* ``backbone``: dynamic; one partition per backbone.
* ``variant``: dynamic; one partition per HPO variant.
* ``backbone_variant``: ``MultiPartitionsDefinition(backbone, variant)`` for per-variant assets. With
  dynamic dimensions it is the full cross-product, so the pairs that really have trials are tracked in a
  third dynamic registry, ``backbone_variant_pairs`` (keys ``"{backbone}|{variant}"``); sensors and schedules
  request only those.
"""

from __future__ import annotations

import dagster as dg

backbone_partitions = dg.DynamicPartitionsDefinition(name="backbone")
variant_partitions = dg.DynamicPartitionsDefinition(name="variant")
backbone_variant_partitions = dg.MultiPartitionsDefinition(
    {"backbone": backbone_partitions, "variant": variant_partitions}
)
#: A dynamic partitions registry that no asset is partitioned by: it only records which pairs have trials.
PAIRS_REGISTRY = "backbone_variant_pairs"


def pair_key(backbone: str, variant: str) -> str:
    """The multi-partition key string of a pair (dimensions in name order: backbone, then variant)."""
    return f"{backbone}|{variant}"


def split_pair_key(key: str) -> tuple[str, str]:
    backbone, variant = key.split("|", 1)
    return backbone, variant


def multi_key(backbone: str, variant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"backbone": backbone, "variant": variant})


def missing_partitions(
    instance: dg.DagsterInstance, backbones: set[str], variants: set[str], pairs: set[tuple[str, str]]
) -> dict[str, list[str]]:
    """Keys to add per registry, from one ``get_dynamic_partitions`` call per registry and a set difference."""
    wanted = {
        "backbone": backbones,
        "variant": variants,
        PAIRS_REGISTRY: {pair_key(b, v) for b, v in pairs},
    }
    return {name: sorted(set(keys) - set(instance.get_dynamic_partitions(name))) for name, keys in wanted.items()}

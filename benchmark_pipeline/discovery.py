"""Which backbones, variants and (backbone, variant) pairs exist: from the config, MLflow tags and disk.

``pairs_with_trials`` holds only pairs for which some source has a finished trial: the cross-product of
backbones × variants is *not* assumed, so nothing downstream asks for a partition that has no trials.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.hashing import is_safe_component
from benchmark_pipeline.tracking import MlflowUnavailableError, client_tracking_uri, ensure_reachable, search_all_runs

logger = logging.getLogger(__name__)


@dataclass
class DiscoveredPartitions:
    backbones: set[str] = field(default_factory=set)
    variants: set[str] = field(default_factory=set)
    pairs_with_trials: set[tuple[str, str]] = field(default_factory=set)
    skipped_unsafe_names: set[str] = field(default_factory=set)

    def add_pair(self, backbone: str, variant: str) -> None:
        unsafe = [n for n in (backbone, variant) if not is_safe_component(n)]
        if unsafe:
            # A name outside [A-Za-z0-9._-] (or too long) could break partition keys, MLflow filters or folder names.
            self.skipped_unsafe_names.update(unsafe)
            return
        self.backbones.add(backbone)
        self.variants.add(variant)
        self.pairs_with_trials.add((backbone, variant))


def _from_disk(config: PipelineConfig, found: DiscoveredPartitions) -> None:
    if not config.hpo_output_dir.is_dir():
        return
    for study in sorted(config.hpo_output_dir.glob("*/study-*")):
        for trial in sorted(study.glob("trial-*")):
            if not (trial / contract.METRICS_FILE).is_file():
                continue
            try:
                meta = json.loads((trial / contract.TRIAL_META_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            variant = contract.variant_of(meta.get("variant"), meta.get("study_name"))
            found.add_pair(study.parent.name, str(variant))
            break  # one finished trial proves the pair


def _from_mlflow(config: PipelineConfig, client: MlflowClient, found: DiscoveredPartitions) -> None:
    prefix = config.mlflow.hpo_experiment_prefix
    experiments = client.search_experiments(filter_string=f"name LIKE '{prefix}%'") if "'" not in prefix else []
    for experiment in experiments:
        runs = search_all_runs(client, [experiment.experiment_id], "attributes.status = 'FINISHED'")
        for run in runs:
            tags = run.data.tags
            backbone = tags.get(contract.TAG_BACKBONE)
            if backbone:
                found.add_pair(
                    backbone, contract.variant_of(tags.get(contract.TAG_VARIANT), tags.get(contract.TAG_STUDY_NAME))
                )


def discover_partitions(config: PipelineConfig, client: MlflowClient | None) -> DiscoveredPartitions:
    """Backbones and variants from the config, plus every pair with a finished trial in MLflow or on disk.

    An unreachable MLflow server is logged and skipped.
    """
    found = DiscoveredPartitions(backbones=set(config.backbones), variants=set(config.variants))
    _from_disk(config, found)
    if client is not None:
        try:
            ensure_reachable(client_tracking_uri(client))
            _from_mlflow(config, client, found)
        except (MlflowUnavailableError, MlflowException, OSError) as error:
            logger.warning("partition discovery skipped MLflow: %s", error)
    if found.skipped_unsafe_names:
        logger.warning("ignored backbone/variant names outside [A-Za-z0-9._-]: %s", sorted(found.skipped_unsafe_names))
    return found

"""The HPO contract: MLflow tags, Optuna attributes, the trial-folder layout and the model files.

Any HPO code (a team's own, or the embedded demo in :mod:`benchmark_pipeline.demo`) writes these; the
selection and benchmarking layers read them (see ``docs/hpo-contract.md``). The identity hashes the tags
carry are computed by :mod:`benchmark_pipeline.hashing`.
"""

from __future__ import annotations

import re
from pathlib import Path

TAG_BACKBONE = "code.backbone"
TAG_VARIANT = "code.variant"
TAG_STUDY_NAME = "code.study_name"
TAG_STUDY_KEY_HASH = "code.study_key_hash"
TAG_TRIAL_KEY_HASH = "code.trial_key_hash"
TAG_TRIAL_NUMBER = "code.trial_number"
TAG_DATA_FINGERPRINT = "code.data_fingerprint"

#: Tags an MLflow run needs to be an eligible trial.
REQUIRED_RUN_TAGS = (TAG_BACKBONE, TAG_STUDY_KEY_HASH, TAG_TRIAL_KEY_HASH)

#: Optuna trial user attributes that cross-reference the other sources.
ATTR_MLFLOW_RUN_ID = "mlflow_run_id"
ATTR_TRIAL_KEY_HASH = "trial_key_hash"
#: Optuna study user attributes.
STUDY_ATTR_BACKBONE = "backbone"
STUDY_ATTR_VARIANT = "variant"
STUDY_ATTR_STUDY_KEY_HASH = "study_key_hash"
STUDY_ATTR_DATA_FINGERPRINT = "data_fingerprint"

METRICS_FILE = "metrics.json"
TRIAL_META_FILE = "trial_meta.json"
STUDY_DB_FILE = "study.db"

# Model files a trial may provide, in its trial folder or under MODEL_ARTIFACT_DIR of its HPO run.
#: ONNX Runtime backend: any ONNX model; its inputs are read from the model's own signature.
ONNX_FILE = "model.onnx"
#: PyTorch backend, first choice: a ``torch.export`` program (``torch.export.save``).
TORCH_EXPORT_FILE = "model.pt2"
#: PyTorch backend, second choice: a Hugging Face checkpoint folder (``save_pretrained``), with ``[hf]``.
HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
#: PyTorch backend, third choice: a ``state_dict`` that ``benchmark_config.pytorch.model_factory`` loads.
CHECKPOINT_FILE = "model.pt"
#: Where the model files live inside an HPO run's MLflow artifacts.
MODEL_ARTIFACT_DIR = "model"

#: ``…_v2`` → ``v2``: the variant parsed from a study name when no ``code.variant`` tag is set. ``[0-9]``, not
#: ``\d`` (which matches Arabic-Indic and other Unicode digits), and ``\Z``, not ``$`` (which matches before
#: a trailing newline): the parsed variant becomes a benchmark key component.
STUDY_NAME_VARIANT_PATTERN = re.compile(r"_(v[0-9]+)\Z")
#: The variant of a trial that neither declares one nor belongs to a ``…_v<N>`` study.
DEFAULT_VARIANT = "default"


def study_name(backbone: str, variant: str) -> str:
    return f"{backbone}_{variant}"


def variant_from_study_name(name: str | None) -> str | None:
    """``"bilstm_v2"`` → ``"v2"``; ``None`` when the name does not end in ``_v<digits>``."""
    if not name:
        return None
    match = STUDY_NAME_VARIANT_PATTERN.search(name)
    return match.group(1) if match else None


def variant_of(declared: str | None, study_name: str | None) -> str:
    """The variant rule, for every source: the variant a record declares (the ``code.variant`` tag, the
    ``variant`` study attribute, ``trial_meta.json``'s ``variant``); else the one its study name ends in
    (``…_v2`` → ``v2``); else :data:`DEFAULT_VARIANT`.

    An empty declared value counts as none. The declared value is returned as recorded: whether it is a safe
    name is for the caller to check (:func:`benchmark_pipeline.hashing.is_safe_component`).
    """
    return declared or variant_from_study_name(study_name) or DEFAULT_VARIANT


def study_dir(hpo_dir: Path, backbone: str, study_key_hash: str) -> Path:
    return hpo_dir / backbone / f"study-{study_key_hash[:8]}"


def trial_dir(hpo_dir: Path, backbone: str, study_key_hash: str, trial_key_hash: str) -> Path:
    return study_dir(hpo_dir, backbone, study_key_hash) / f"trial-{trial_key_hash[:8]}"

"""Where a trial's model is, and which backends its files allow (no torch or onnxruntime imported here).

The files a trial may provide are named in :mod:`benchmark_pipeline.contract`. A trial's model folder is
its ``trial_dir`` when that is readable on this machine and inside a configured HPO folder; otherwise the
``model/`` artifacts of its HPO run are downloaded from MLflow (proxied ``mlflow-artifacts:`` stores too).
A folder outside the configured roots is refused, never read, and so is a model file inside it that is a
symbolic link out of them: model files are only read from where the configuration says HPO results live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.backends import BACKENDS, ONNXRUNTIME, PYTORCH, ModelFileError
from benchmark_pipeline.layout import Layout

#: Every file a backend may read from a model folder.
MODEL_FILES = (
    contract.ONNX_FILE,
    contract.TORCH_EXPORT_FILE,
    contract.HF_CONFIG_FILE,
    contract.HF_WEIGHTS_FILE,
    contract.CHECKPOINT_FILE,
    contract.TRIAL_META_FILE,
)

ROUTE_TORCH_EXPORT = "torch.export"
ROUTE_HUGGING_FACE = "huggingface"
ROUTE_FACTORY = "model_factory"


@dataclass(frozen=True)
class TorchModelFiles:
    """How the PyTorch backend loads this trial's module, and from which files."""

    route: str
    folder: Path
    paths: tuple[Path, ...]
    factory: str | None = None


def find_torch_model(folder: Path, model_factory: str | None) -> TorchModelFiles | None:
    """The first PyTorch route the folder's files allow: ``model.pt2``, a Hugging Face checkpoint, a factory."""
    exported = folder / contract.TORCH_EXPORT_FILE
    if exported.is_file():
        return TorchModelFiles(ROUTE_TORCH_EXPORT, folder, (exported,))
    hf = (folder / contract.HF_CONFIG_FILE, folder / contract.HF_WEIGHTS_FILE)
    if all(p.is_file() for p in hf):
        return TorchModelFiles(ROUTE_HUGGING_FACE, folder, hf)
    if model_factory:
        return TorchModelFiles(ROUTE_FACTORY, folder, (folder / contract.CHECKPOINT_FILE,), model_factory)
    return None


def files_looked_for(backend: str) -> str:
    if backend == ONNXRUNTIME:
        return contract.ONNX_FILE
    return (
        f"{contract.TORCH_EXPORT_FILE}, or {contract.HF_CONFIG_FILE} + {contract.HF_WEIGHTS_FILE}, "
        f"or benchmark_config.pytorch.model_factory set (for a {contract.CHECKPOINT_FILE} state_dict)"
    )


def plan_backends(
    folder: Path, requested: Sequence[str] | None, model_factory: str | None, trial: str
) -> tuple[list[str], dict[str, str]]:
    """``(backends to run, why each other backend does not run)``.

    ``requested`` (``benchmark_config.backends``) is a demand: a listed backend without its model file is a
    :class:`ModelFileError` naming the trial and the files looked for. Left out, every backend the folder has
    a model for runs; none at all is an error too.
    """
    available = {
        ONNXRUNTIME: (folder / contract.ONNX_FILE).is_file(),
        PYTORCH: find_torch_model(folder, model_factory) is not None,
    }
    if requested is not None:
        missing = [b for b in requested if not available[b]]
        if missing:
            raise ModelFileError(
                f"trial {trial}: benchmark_config.backends lists {missing}, but {folder} has no "
                + "; no ".join(f"{files_looked_for(b)} (for {b})" for b in missing)
            )
        chosen = list(requested)
        reasons = {b: "not in benchmark_config.backends" for b in BACKENDS if b not in chosen}
    else:
        chosen = [b for b in BACKENDS if available[b]]
        reasons = {
            b: f"no model file: looked for {files_looked_for(b)} in {folder}" for b in BACKENDS if not available[b]
        }
        if not chosen:
            raise ModelFileError(
                f"trial {trial}: {folder} holds no model file for any backend; looked for {contract.ONNX_FILE}, {files_looked_for(PYTORCH)}"
            )
    return chosen, reasons


def allowed_model_roots(root_dir: Path, environment: str, hpo_dirs: Sequence[Path | str | None]) -> list[Path]:
    """The folders model files may be read from: the default HPO folder and every configured one."""
    roots = [Layout(Path(root_dir), environment).default_hpo_dir, *(Path(d) for d in hpo_dirs if d)]
    return sorted({r.resolve() for r in roots})


def resolve_model_dir(
    trial_info: Mapping[str, Any], allowed_roots: Sequence[Path], client: MlflowClient | None, download_root: Path
) -> Path:
    """The folder holding the trial's model files.

    A ``trial_dir`` that exists on this machine is used only when it lies inside one of ``allowed_roots``;
    one that does not exist here (recorded on another machine), or that holds no model file, falls back to
    the HPO run's MLflow artifacts (``model/``).
    """
    folder = trial_info.get("trial_dir")
    if folder and Path(folder).exists():
        resolved = Path(folder).resolve()
        if not any(resolved.is_relative_to(root) for root in allowed_roots):
            raise ModelFileError(
                f"trial_dir {folder} is outside the configured HPO folders {[str(r) for r in allowed_roots]}"
            )
        present = [resolved / name for name in MODEL_FILES if (resolved / name).is_file()]
        for path in present:
            if not any(path.resolve().is_relative_to(root) for root in allowed_roots):
                raise ModelFileError(
                    f"model file {path} resolves to {path.resolve()}, outside the configured HPO folders {[str(r) for r in allowed_roots]}; not read"
                )
        if present:
            return resolved
    run_id = trial_info.get("run_id")
    if run_id and client is not None:
        try:
            downloaded = client.download_artifacts(run_id, contract.MODEL_ARTIFACT_DIR, str(download_root))
        except (MlflowException, OSError) as error:
            raise ModelFileError(
                f"cannot download the model of HPO run {run_id} (artifact folder {contract.MODEL_ARTIFACT_DIR}/): {error}"
            ) from None
        return Path(downloaded)
    raise ModelFileError(
        f"no model for trial {trial_info.get('trial_id')} of {trial_info.get('backbone')}: "
        f"trial_dir={folder!r} holds no model file and there is no MLflow run id/client to download one from"
    )

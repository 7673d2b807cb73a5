"""Models the demo does not define, from HPO records this module writes itself by following docs/hpo-contract.md.

A "team" runs a small hand-written sweep of two tiny Hugging Face token classifiers (DistilBERT and RoBERTa,
built from configs: nothing is downloaded), and records each trial as the contract says: an MLflow run over
HTTP with proxied artifacts (``model/``: ``config.json``, ``model.safetensors``, ``model.onnx``), an Optuna
study in a storage outside the HPO folder, and a trial folder in the team's own directory. The pipeline is
then pointed at those records by configuration alone and must retrieve and benchmark them on both backends,
through the Python API and the dagster CLI, with the trial folders and with the models only in MLflow.

Other model shapes go through the runner directly: an ONNX model with float, int32 and bool inputs and two
outputs on synthetic inputs, a ``torch.export`` program, and a ``state_dict`` loaded by a model factory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
import torch
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper

from benchmark_pipeline import (
    ModelFileError,
    benchmark_best_trials,
    contract,
    filter_missing_benchmarks,
    load_config,
    retrieve_best_trials,
)
from benchmark_pipeline.benchmarking.existence import fetch_benchmark_runs
from benchmark_pipeline.benchmarking.metrics import macro_f1
from benchmark_pipeline.benchmarking.runner import run_benchmark
from benchmark_pipeline.demo.settings import is_demo_config
from benchmark_pipeline.hashing import data_fingerprint, study_key_hash, trial_key_hash
from benchmark_pipeline_tests.tiny_config import unique_suffix

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is part of the dev install")

NUM_LABELS = 5
VOCAB = 60
MAX_LENGTH = 16
OBJECTIVE = {"metric": "macro-f1", "direction": "maximize"}
#: The design document's benchmark config shape: no backends (every backend the trial has a model for).
BENCHMARK_CONFIG = {"batch_sizes": [1, 4], "iterations": 3, "warmup": 1, "max_length": MAX_LENGTH, "device": "cpu"}


# --------------------------------------------------------------------------------------- the team's HPO


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _write_user_data(folder: Path, examples: int, seed: int) -> None:
    """The team's own token-classification data: JSONL lines of ``input_ids`` and per-token ``labels``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(examples):
        length = int(rng.integers(5, MAX_LENGTH + 1))
        ids = rng.integers(3, VOCAB, size=length)
        labels = (ids % NUM_LABELS).tolist()  # learnable, deterministic
        lines.append(json.dumps({"input_ids": ids.tolist(), "labels": labels}))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "README.txt").write_text("the team's data; the pipeline must never write here\n", encoding="utf-8")


def _build_hf_model(backbone: str, width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if backbone == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=VOCAB,
            dim=width,
            n_layers=1,
            n_heads=2,
            hidden_dim=2 * width,
            max_position_embeddings=MAX_LENGTH + 4,
            num_labels=NUM_LABELS,
        )
        return transformers.DistilBertForTokenClassification(config).eval()
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=width, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * width,
        max_position_embeddings=MAX_LENGTH + 4, num_labels=NUM_LABELS,
    )  # fmt: skip
    return transformers.RobertaForTokenClassification(config).eval()


def export_hf_onnx(model: torch.nn.Module, path: Path) -> None:
    """The export call docs/hpo-contract.md documents for the pinned torch: named inputs, dynamic axes."""
    example = (torch.ones(2, MAX_LENGTH, dtype=torch.int64), torch.ones(2, MAX_LENGTH, dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example, str(path), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "logits")},
        )  # fmt: skip


def _score(model: torch.nn.Module, data_file: Path) -> float:
    rows = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines() if line]
    ids = np.zeros((len(rows), MAX_LENGTH), dtype=np.int64)
    labels = np.full((len(rows), MAX_LENGTH), -100, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = row["input_ids"]
        labels[i, : len(row["labels"])] = row["labels"]
    with torch.inference_mode():
        logits = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy((labels != -100).astype(np.int64))
        ).logits
    return macro_f1(logits.argmax(-1).numpy(), labels, NUM_LABELS)


@dataclass(frozen=True)
class TeamHpo:
    """Where the team's records are; ``best`` is each backbone's best trial key by the team's own reckoning."""

    root: Path
    hpo_dir: Path
    data_dir: Path
    storage: str
    prefix: str
    tracking_uri: str
    best: dict[str, str]
    data_config: dict[str, Any]

    def config_file(
        self, path: Path, *, hpo_dir: Path | None = None, storages: list[str] | None = None, **benchmark: Any
    ) -> Path:
        raw = {
            "environment": "team",
            "root_dir": str(path.parent / "pipeline-root"),
            "backbones": ["distilbert", "distilroberta"],
            "mlflow": {
                "tracking_uri": self.tracking_uri,
                "hpo_experiment_prefix": self.prefix,
                "benchmark_experiment": f"{self.prefix}benchmarks-{unique_suffix()}",
            },
            "optuna": {"storages": [self.storage] if storages is None else storages},
            "hpo_output_dir": str(hpo_dir or self.hpo_dir),
            "data_config": self.data_config,
            "hpo_config": {"objective": OBJECTIVE},
            "benchmark_config": {**BENCHMARK_CONFIG, "test_data": str(self.data_dir / "test.jsonl"), **benchmark},
        }
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path


def _record_trial(client: MlflowClient, experiment_id: str, study: optuna.Study, backbone: str, variant: str, study_key: str,
                  data_fp: str, number: int, width: int, team: Path, data_dir: Path) -> tuple[str, float]:  # fmt: skip
    hyperparameters = {"width": width, "seed": number}
    trial_key = trial_key_hash(study_key, hyperparameters)
    model = _build_hf_model(backbone, width, seed=1000 * width + number)
    value = _score(model, data_dir / "test.jsonl")
    folder = contract.trial_dir(team, backbone, study_key, trial_key)
    folder.mkdir(parents=True)
    model.save_pretrained(str(folder))  # config.json + model.safetensors
    export_hf_onnx(model, folder / contract.ONNX_FILE)
    run = client.create_run(
        experiment_id,
        tags={
            contract.TAG_BACKBONE: backbone, contract.TAG_VARIANT: variant, contract.TAG_STUDY_NAME: contract.study_name(backbone, variant),
            contract.TAG_STUDY_KEY_HASH: study_key, contract.TAG_TRIAL_KEY_HASH: trial_key, contract.TAG_TRIAL_NUMBER: str(number),
            contract.TAG_DATA_FINGERPRINT: data_fp,
        },
    )  # fmt: skip
    run_id = run.info.run_id
    meta = {
        "backbone": backbone, "variant": variant, "study_name": contract.study_name(backbone, variant), "study_key_hash": study_key,
        "trial_key_hash": trial_key, "trial_number": number, "mlflow_run_id": run_id, "hyperparameters": hyperparameters,
        "data_fingerprint": data_fp,
    }  # fmt: skip
    (folder / contract.TRIAL_META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    (folder / contract.METRICS_FILE).write_text(json.dumps({OBJECTIVE["metric"]: value}), encoding="utf-8")
    client.log_batch(
        run_id,
        metrics=[Metric(OBJECTIVE["metric"], value, 0, 0)],
        params=[Param(k, str(v)) for k, v in hyperparameters.items()],
    )
    client.log_artifacts(run_id, str(folder), contract.MODEL_ARTIFACT_DIR)
    client.set_terminated(run_id, "FINISHED")
    study.add_trial(
        optuna.trial.create_trial(
            params={"width": width, "seed": number},
            distributions={
                "width": optuna.distributions.CategoricalDistribution([16, 32]),
                "seed": optuna.distributions.IntDistribution(0, 10),
            },
            value=value,
            user_attrs={contract.ATTR_TRIAL_KEY_HASH: trial_key, contract.ATTR_MLFLOW_RUN_ID: run_id},
        )
    )
    return trial_key, value


@pytest.fixture(scope="module")
def team_hpo(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> TeamHpo:
    """The team's sweep: distilbert (v1, v2) and distilroberta (v1), two trials each, recorded per the contract."""
    root = tmp_path_factory.mktemp("team")
    data_dir, hpo_dir = root / "data", root / "hpo-results"
    _write_user_data(data_dir, examples=24, seed=3)
    data_config = {"name": "team-ner", "version": "2024-06", "local_path": str(data_dir)}
    data_fp = data_fingerprint(data_config)
    storage = f"sqlite:///{root / 'optuna' / 'team.db'}"  # outside the HPO folder
    (root / "optuna").mkdir()
    prefix = f"team-{unique_suffix()}-"
    client = MlflowClient(tracking_uri=mlflow_server)
    best: dict[str, tuple[float, str]] = {}
    plan = {"distilbert": {"v1": [16, 32], "v2": [32, 16]}, "distilroberta": {"v1": [16, 32]}}
    for backbone, variants in plan.items():
        experiment_id = client.create_experiment(
            f"{prefix}{backbone}"
        )  # default artifact root: mlflow-artifacts:/ (proxied)
        for variant, widths in variants.items():
            study_key = study_key_hash(backbone, variant, data_fp, {"widths": widths}, OBJECTIVE)
            study = optuna.create_study(
                study_name=contract.study_name(backbone, variant), storage=storage, direction="maximize"
            )
            for attr, value in {contract.STUDY_ATTR_BACKBONE: backbone, contract.STUDY_ATTR_VARIANT: variant,
                                contract.STUDY_ATTR_STUDY_KEY_HASH: study_key, contract.STUDY_ATTR_DATA_FINGERPRINT: data_fp}.items():  # fmt: skip
                study.set_user_attr(attr, value)
            for number, width in enumerate(widths):
                key, value = _record_trial(
                    client,
                    experiment_id,
                    study,
                    backbone,
                    variant,
                    study_key,
                    data_fp,
                    number,
                    width,
                    hpo_dir,
                    data_dir,
                )
                if backbone not in best or value > best[backbone][0]:
                    best[backbone] = (value, key)
    assert client.get_experiment_by_name(f"{prefix}distilbert").artifact_location.startswith("mlflow-artifacts:")
    return TeamHpo(
        root, hpo_dir, data_dir, storage, prefix, mlflow_server, {b: k for b, (_, k) in best.items()}, data_config
    )


def _retrieve(config_path: Path, scope: str = "overall") -> tuple[Any, dict[str, Any]]:
    config = load_config(config_path, env={})
    best = retrieve_best_trials(
        list(config.backbones), config.hpo_experiments(), config.benchmark_experiment(), config.selection_config(),
        config.hpo_config, config.data_config, config.root_dir, config.environment, selection_scope=scope,
        mlflow_client=MlflowClient(tracking_uri=config.mlflow.tracking_uri),
    )  # fmt: skip
    return config, best


def _benchmark(config: Any, trials: dict[str, Any]) -> dict[str, Any]:
    """The README's call: no hpo_output_dir, no test data path (both come from the retrieval and the config)."""
    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    todo = filter_missing_benchmarks(
        trials,
        config.benchmark_experiment(),
        config.benchmark_config,
        config.data_config,
        config.root_dir,
        config.environment,
        client,
    )
    return benchmark_best_trials(
        todo, None, config.root_dir, config.environment, config.data_config, config.hpo_config, config.benchmark_config,
        config.benchmark_experiment(), client,
    )  # fmt: skip


def _assert_both_backends(result: dict[str, Any]) -> None:
    assert result["backends"] == {"onnxruntime": "ran", "pytorch": "ran"}
    assert result["pytorch_route"] == "huggingface"
    assert sorted({(m["backend"], m["batch_size"]) for m in result["measurements"]}) == [
        ("onnxruntime", 1),
        ("onnxruntime", 4),
        ("pytorch", 1),
        ("pytorch", 4),
    ]
    assert all(m["count"] >= 3 and m["p50_ms"] > 0 for m in result["measurements"])
    quality = result["quality"]
    assert quality["max_abs_output_diff"] <= quality["output_tolerance"] == 1e-3
    assert 0.0 <= quality["test_macro_f1"] <= 1.0 and quality["test_examples"] == 24.0
    assert result["inputs"].endswith("test.jsonl")


# ----------------------------------------------------------------------------------------------- tests


def test_team_config_is_not_a_demo_config(team_hpo: TeamHpo, tmp_path: Path) -> None:
    config = load_config(team_hpo.config_file(tmp_path / "team.yaml"), env={})
    assert "backends" not in config.benchmark_config and not is_demo_config(config)


def test_hf_models_retrieved_and_benchmarked_from_trial_folders(team_hpo: TeamHpo, tmp_path: Path) -> None:
    before = _tree_digest(team_hpo.data_dir)
    config, best = _retrieve(team_hpo.config_file(tmp_path / "team.yaml"))
    assert {b: info["trial_id"] for b, info in best.items()} == team_hpo.best
    assert all(info["source"] == "mlflow" and info["sources_agree"] for info in best.values())
    assert all(Path(info["trial_dir"]).is_relative_to(team_hpo.hpo_dir) for info in best.values())
    results = _benchmark(config, best)
    for backbone, result in results.items():
        assert result["status"] == "benchmarked" and result["mlflow_logged"] is True
        assert result["trial_id"] == team_hpo.best[backbone]
        _assert_both_backends(result)
    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    assert fetch_benchmark_runs(client, config.benchmark_experiment()).finished_keys() == {
        r["benchmark_key"] for r in results.values()
    }
    # Idempotent: the second pass finds both keys and benchmarks nothing.
    assert _benchmark(config, best) == {}
    assert _tree_digest(team_hpo.data_dir) == before, "the team's data folder changed"


def test_per_variant_picks_of_hf_models_benchmark_from_mlflow_artifacts_only(team_hpo: TeamHpo, tmp_path: Path) -> None:
    empty = tmp_path / "no-trial-folders-on-this-machine"
    empty.mkdir()
    config, best = _retrieve(team_hpo.config_file(tmp_path / "team.yaml", hpo_dir=empty, storages=[]), "per_variant")
    assert sorted((b, v) for b, per in best.items() for v in per) == [
        ("distilbert", "v1"),
        ("distilbert", "v2"),
        ("distilroberta", "v1"),
    ]
    assert all(info["trial_dir"] is None and info["run_id"] for per in best.values() for info in per.values())
    results = _benchmark(config, best)
    for per in results.values():
        for result in per.values():
            _assert_both_backends(result)
    assert not any(config.root_dir.rglob("model.safetensors")), "downloaded models are scratch, not kept under the root"


def test_hf_model_through_the_dagster_cli_with_models_only_in_mlflow(team_hpo: TeamHpo, tmp_path: Path) -> None:
    before = _tree_digest(team_hpo.data_dir)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    config_path = team_hpo.config_file(tmp_path / "team.yaml", hpo_dir=empty, storages=[])
    env = {
        **os.environ,
        "BENCHMARK_PIPELINE_CONFIG": str(config_path),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "MLFLOW_TRACKING_URI": team_hpo.tracking_uri,
    }
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    dagster = Path(sys.executable).parent / "dagster"

    def materialize(*args: str) -> str:
        command = [str(dagster), "asset", "materialize", "-m", "benchmark_pipeline.definitions", *args]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        return done.stdout + done.stderr

    materialize("--select", "discovered_partitions")
    log = materialize("--select", "best_trial,benchmark_result", "--partition", "distilbert")
    assert "benchmark distilbert:" in log and ": benchmarked (MLflow run" in log
    client = MlflowClient(tracking_uri=team_hpo.tracking_uri)
    loaded = load_config(config_path, env={})
    runs = fetch_benchmark_runs(client, loaded.benchmark_experiment())
    assert len(runs) == 1 and all(r.status == "FINISHED" for rs in runs.values() for r in rs)
    key = next(iter(runs))
    assert key.startswith("distilbert:v") and f":{team_hpo.best['distilbert']}:" in key
    assert _tree_digest(team_hpo.data_dir) == before


# ------------------------------------------------------------------------------- other model shapes


class TinyTagger(torch.nn.Module):
    """A model class of the team's own (not the demo's): embedding + linear, two named inputs."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.head = torch.nn.Linear(width, NUM_LABELS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32))


def build_tiny_tagger(trial_info: dict[str, Any], model_dir: Path) -> torch.nn.Module:
    """The model factory named by import string in the factory test."""
    model = TinyTagger(int(trial_info["hyperparameters"]["width"]))
    model.load_state_dict(torch.load(model_dir / contract.CHECKPOINT_FILE, map_location="cpu", weights_only=True))
    return model


def _tagger_folder(folder: Path, *, pt2: bool = False, state_dict: bool = False) -> Path:
    torch.manual_seed(0)
    model = TinyTagger(8).eval()
    folder.mkdir(parents=True)
    export_hf_onnx(model, folder / contract.ONNX_FILE)
    ids = torch.ones(2, MAX_LENGTH, dtype=torch.int64)
    if pt2:
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=MAX_LENGTH)
        # Two distinct tensors: torch.export would trace one tensor passed twice as one input.
        program = torch.export.export(
            model,
            (ids, ids.clone()),
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
        )
        torch.export.save(program, str(folder / contract.TORCH_EXPORT_FILE))
    if state_dict:
        torch.save(model.state_dict(), folder / contract.CHECKPOINT_FILE)
    return folder


TRIAL = {
    "backbone": "team_tagger",
    "variant": "v1",
    "trial_id": "t" * 16,
    "run_id": None,
    "hyperparameters": {"width": 8},
}


def test_torch_export_program_is_benchmarked_against_its_onnx_twin(tmp_path: Path) -> None:
    folder = _tagger_folder(tmp_path / "trial", pt2=True)
    result = run_benchmark("key", TRIAL, folder, None, {}, BENCHMARK_CONFIG)
    assert result.backends == {"onnxruntime": "ran", "pytorch": "ran"} and result.pytorch_route == "torch.export"
    assert result.quality["max_abs_output_diff"] < 1e-5 and result.inputs.startswith("synthetic")
    assert "test_macro_f1" not in result.quality, "synthetic inputs have no labels: no metric is made up"


def test_state_dict_loaded_by_a_factory_named_in_config(tmp_path: Path, team_hpo: TeamHpo) -> None:
    folder = _tagger_folder(tmp_path / "trial", state_dict=True)
    config = {
        **BENCHMARK_CONFIG,
        "pytorch": {"model_factory": "benchmark_pipeline_tests.test_any_model:build_tiny_tagger"},
    }
    result = run_benchmark("key", TRIAL, folder, team_hpo.data_dir / "test.jsonl", {}, config)
    assert result.pytorch_route == "model_factory" and result.backends["pytorch"] == "ran"
    assert result.quality["max_abs_output_diff"] < 1e-5 and 0.0 <= result.quality["test_macro_f1"] <= 1.0
    # Without the factory the state_dict alone is no PyTorch model: the default plan runs ONNX Runtime only and says why.
    alone = run_benchmark("key", TRIAL, folder, None, {}, BENCHMARK_CONFIG)
    assert alone.backends["onnxruntime"] == "ran" and alone.backends["pytorch"].startswith(
        "no model file: looked for model.pt2"
    )


def test_listed_backend_without_its_model_file_names_the_trial_and_the_files(tmp_path: Path) -> None:
    folder = _tagger_folder(tmp_path / "trial")
    with pytest.raises(
        ModelFileError,
        match=r"trial t+ of team_tagger: benchmark_config.backends lists \['pytorch'\], but .* has no model\.pt2, or config\.json \+ model\.safetensors",
    ):
        run_benchmark("key", TRIAL, folder, None, {}, {**BENCHMARK_CONFIG, "backends": ["onnxruntime", "pytorch"]})
    (folder / contract.ONNX_FILE).unlink()
    with pytest.raises(ModelFileError, match="holds no model file for any backend"):
        run_benchmark("key", TRIAL, folder, None, {}, BENCHMARK_CONFIG)


def _vision_model(path: Path) -> None:
    """A model with other input names and dtypes: float ``pixel_values``, int32 ``ids``, bool ``keep``; two outputs."""
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [3 * 4 * 4, 6], np.linspace(-1, 1, 3 * 4 * 4 * 6, dtype=np.float32).tolist()
    )
    nodes = [
        helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["scores"]),
        helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keep_f", "axes"], ["keep_col"]),
        helper.make_node("Mul", ["scores", "keep_col"], ["logits"]),
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_f", "axes"], ["id_sum"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "vision",
        [
            helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 4, 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "sequence"]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 6]), helper.make_tensor_value_info("id_sum", TensorProto.FLOAT, ["batch"])],
        initializer=[weights, helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_onnx_model_with_other_inputs_and_two_outputs_runs_on_synthetic_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "vision"
    folder.mkdir()
    _vision_model(folder / contract.ONNX_FILE)
    result = run_benchmark(
        "key", {**TRIAL, "backbone": "tiny_vit"}, folder, None, {}, {**BENCHMARK_CONFIG, "batch_sizes": [1, 3]}
    )
    assert result.backends["onnxruntime"] == "ran" and "pytorch" not in result.providers_used
    assert [(m["backend"], m["batch_size"]) for m in result.measurements] == [("onnxruntime", 1), ("onnxruntime", 3)]
    assert result.quality == {"test_examples": 8.0} and result.inputs.startswith("synthetic")


def test_test_data_without_a_model_input_names_both(tmp_path: Path) -> None:
    folder = tmp_path / "vision"
    folder.mkdir()
    _vision_model(folder / contract.ONNX_FILE)
    data = tmp_path / "data.npz"
    np.savez(data, pixel_values=np.zeros((4, 3, 4, 4), dtype=np.float32), labels=np.zeros(4, dtype=np.int64))
    with pytest.raises(
        ValueError,
        match=r"has no input 'ids'; the model takes \['pixel_values', 'ids', 'keep'\], the file has \['pixel_values'\]",
    ):
        run_benchmark("key", {**TRIAL, "backbone": "tiny_vit"}, folder, data, {}, BENCHMARK_CONFIG)
    np.savez(
        data,
        pixel_values=np.ones((4, 3, 4, 4), dtype=np.float32),
        ids=np.ones((4, 5), dtype=np.int64),
        keep=np.ones(4, dtype=bool),
        labels=np.arange(4) % 6,
    )
    result = run_benchmark("key", {**TRIAL, "backbone": "tiny_vit"}, folder, data, {}, BENCHMARK_CONFIG)
    assert result.inputs == str(data) and 0.0 <= result.quality["test_accuracy"] <= 1.0  # one label per example

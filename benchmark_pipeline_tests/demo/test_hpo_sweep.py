"""The embedded HPO sweep: every trial recorded consistently in MLflow, an Optuna study and a trial folder;
idempotent reruns; deterministic results; a deterministic dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.demo.dataset import LABELS, load_split, write_dataset
from benchmark_pipeline.demo.models import build_model
from benchmark_pipeline.demo.sweep import SweepSummary, run_sweep
from benchmark_pipeline.demo.training import macro_f1, predict
from benchmark_pipeline.hashing import data_fingerprint, study_key_hash, trial_key_hash
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps

METRIC = "macro-f1"


def _quiet(_message: str) -> None:
    pass


def _runs_of_study(client: MlflowClient, summary: SweepSummary) -> list[Any]:
    return client.search_runs(
        [summary.experiment_id],
        f"tags.`{contract.TAG_STUDY_KEY_HASH}` = '{summary.study_key_hash}'",
        run_view_type=ViewType.ALL,
        max_results=1000,
    )


def _trial_folders(summary: SweepSummary) -> list[Path]:
    return sorted(p for p in Path(summary.study_dir).glob("trial-*") if p.is_dir())


def _snapshot(client: MlflowClient, summary: SweepSummary) -> dict[str, Any]:
    """Everything a sweep left, as comparable values."""
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage_url)
    return {
        "runs": sorted(r.info.run_id for r in _runs_of_study(client, summary)),
        "trials": [
            (t.number, t.state.name, t.value, t.user_attrs.get(contract.ATTR_TRIAL_KEY_HASH))
            for t in study.get_trials()
        ],
        "folders": {p.name: (p / contract.METRICS_FILE).read_text(encoding="utf-8") for p in _trial_folders(summary)},
    }


# ------------------------------------------------------------------------------------------- consistency


def test_every_trial_is_recorded_consistently_in_all_three_sources(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient
) -> None:
    config = demo_sweeps.config
    data_fp = data_fingerprint(config.data_config)
    assert len(demo_sweeps.summaries) == 4
    for (backbone, variant), summary in demo_sweeps.summaries.items():
        variant_config = config.hpo_config["variants"][variant]
        expected_study_key = study_key_hash(backbone, variant, data_fp, variant_config, config.objective)
        assert summary.study_key_hash == expected_study_key
        assert summary.study_name == f"{backbone}_{variant}"
        assert summary.trials_in_study == summary.trials_run_now == 3
        assert Path(summary.study_dir) == contract.study_dir(config.hpo_output_dir, backbone, expected_study_key)

        # MLflow: one FINISHED run per trial, tagged per the contract.
        experiment = mlflow_client.get_experiment_by_name(config.mlflow.hpo_experiment_name(backbone))
        assert experiment is not None and experiment.experiment_id == summary.experiment_id
        runs = _runs_of_study(mlflow_client, summary)
        assert len(runs) == 3
        runs_by_key = {}
        for run in runs:
            tags = run.data.tags
            assert run.info.status == "FINISHED"
            assert tags[contract.TAG_BACKBONE] == backbone
            assert tags[contract.TAG_VARIANT] == variant
            assert tags[contract.TAG_STUDY_NAME] == summary.study_name
            assert tags[contract.TAG_STUDY_KEY_HASH] == expected_study_key
            assert tags[contract.TAG_DATA_FINGERPRINT] == data_fp
            runs_by_key[tags[contract.TAG_TRIAL_KEY_HASH]] = run
        assert len(runs_by_key) == 3, "every trial has its own identity"

        # Optuna: three COMPLETE trials whose attributes point at the runs.
        study = optuna.load_study(study_name=summary.study_name, storage=summary.storage_url)
        assert study.user_attrs[contract.STUDY_ATTR_BACKBONE] == backbone
        assert study.user_attrs[contract.STUDY_ATTR_VARIANT] == variant
        assert study.user_attrs[contract.STUDY_ATTR_STUDY_KEY_HASH] == expected_study_key
        assert study.user_attrs[contract.STUDY_ATTR_DATA_FINGERPRINT] == data_fp
        trials = study.get_trials()
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
        assert summary.best_value == max(t.value for t in trials)

        # Folders: one per trial, with the four files.
        folders = _trial_folders(summary)
        assert len(folders) == 3
        study_keys_seen = set()
        for trial in trials:
            trial_key = trial.user_attrs[contract.ATTR_TRIAL_KEY_HASH]
            assert trial_key == trial_key_hash(expected_study_key, trial.params)
            run = runs_by_key[trial_key]
            run_id = trial.user_attrs[contract.ATTR_MLFLOW_RUN_ID]
            assert run.info.run_id == run_id
            assert run.data.tags[contract.TAG_TRIAL_NUMBER] == str(trial.number)
            assert run.data.params == {k: str(v) for k, v in trial.params.items()}

            folder = contract.trial_dir(config.hpo_output_dir, backbone, expected_study_key, trial_key)
            assert folder in folders
            for name in (contract.METRICS_FILE, contract.TRIAL_META_FILE, contract.ONNX_FILE, contract.CHECKPOINT_FILE):
                assert (folder / name).is_file(), f"{folder / name} missing"
            metrics = json.loads((folder / contract.METRICS_FILE).read_text(encoding="utf-8"))
            meta = json.loads((folder / contract.TRIAL_META_FILE).read_text(encoding="utf-8"))
            # The same metric value, bit for bit, in all three sources.
            assert metrics[METRIC] == trial.value == run.data.metrics[METRIC]
            assert {name: run.data.metrics[name] for name in metrics} == metrics
            # Cross references both ways.
            assert meta["mlflow_run_id"] == run_id
            assert meta["trial_key_hash"] == trial_key
            assert meta["trial_number"] == trial.number
            assert meta["study_key_hash"] == expected_study_key
            assert meta["study_name"] == summary.study_name
            assert (meta["backbone"], meta["variant"]) == (backbone, variant)
            assert meta["hyperparameters"] == trial.params
            assert meta["data_fingerprint"] == data_fp
            assert meta["objective"] == {"metric": METRIC, "direction": "maximize"}
            assert 0.0 <= metrics["onnx_max_abs_diff"] <= 1e-3
            study_keys_seen.add(meta["study_key_hash"])
        assert study_keys_seen == {expected_study_key}


def test_model_artifacts_are_in_mlflow(demo_sweeps: DemoSweeps, mlflow_client: MlflowClient, tmp_path: Path) -> None:
    summary = demo_sweeps.summaries[("tiny_transformer", "v1")]
    run = _runs_of_study(mlflow_client, summary)[0]
    listed = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, contract.MODEL_ARTIFACT_DIR)}
    assert listed == {
        f"{contract.MODEL_ARTIFACT_DIR}/{name}"
        for name in (contract.ONNX_FILE, contract.CHECKPOINT_FILE, contract.TRIAL_META_FILE)
    }
    downloaded = Path(
        mlflow_client.download_artifacts(
            run.info.run_id, f"{contract.MODEL_ARTIFACT_DIR}/{contract.ONNX_FILE}", str(tmp_path)
        )
    )
    folder = contract.trial_dir(
        demo_sweeps.hpo_dir, "tiny_transformer", summary.study_key_hash, run.data.tags[contract.TAG_TRIAL_KEY_HASH]
    )
    assert downloaded.read_bytes() == (folder / contract.ONNX_FILE).read_bytes()


@pytest.mark.parametrize("backbone", ["tiny_transformer", "bilstm"])
def test_onnx_model_matches_the_pytorch_checkpoint(demo_sweeps: DemoSweeps, backbone: str) -> None:
    config = demo_sweeps.config
    summary = demo_sweeps.summaries[(backbone, "v2")]
    max_length = int(config.data_config["max_length"])
    dataset = write_dataset(config.data_config, config.root_dir)
    test, validation = load_split(dataset.test, max_length), load_split(dataset.validation, max_length)
    for folder in _trial_folders(summary):
        meta = json.loads((folder / contract.TRIAL_META_FILE).read_text(encoding="utf-8"))
        metrics = json.loads((folder / contract.METRICS_FILE).read_text(encoding="utf-8"))
        model = build_model(
            backbone, meta["hyperparameters"], int(config.data_config["vocab_size"]), len(LABELS), max_length
        )
        model.load_state_dict(torch.load(folder / contract.CHECKPOINT_FILE, weights_only=True))
        model.eval()
        # The checkpoint is the model that was evaluated: it reproduces the recorded validation metric.
        assert macro_f1(predict(model, validation), validation.labels) == metrics[METRIC]
        session = ort.InferenceSession(str(folder / contract.ONNX_FILE), providers=["CPUExecutionProvider"])
        for rows, length in ((slice(0, 1), max_length), (slice(0, 32), max_length), (slice(3, 8), max_length // 2)):
            ids = np.ascontiguousarray(test.input_ids[rows, :length])
            mask = np.ascontiguousarray(test.attention_mask[rows, :length])
            (onnx_logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
            with torch.inference_mode():
                torch_logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            assert onnx_logits.shape == (ids.shape[0], length, len(LABELS))
            np.testing.assert_allclose(onnx_logits, torch_logits, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------- reruns and determinism


@dataclass
class TwinSweeps:
    """The same config swept twice, in two fresh roots with separate MLflow experiments."""

    config_a: PipelineConfig
    config_b: PipelineConfig
    summary_a: SweepSummary
    summary_b: SweepSummary
    snapshot_a: dict[str, Any]
    snapshot_b: dict[str, Any]


BACKBONE, VARIANT = "bilstm", "v1"
TWIN_OVERRIDES = {"hpo_config": {"variants": {"v1": {"n_trials": 2}, "v2": None}}}


@pytest.fixture(scope="module")
def twin_sweeps(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> TwinSweeps:
    from benchmark_pipeline.config import config_from_dict
    from benchmark_pipeline_tests.tiny_config import deep_merge, tiny_config_dict

    client = MlflowClient(tracking_uri=mlflow_server)
    configs, summaries, snapshots = [], [], []
    for name in ("twin_a", "twin_b"):
        raw = deep_merge(tiny_config_dict(tmp_path_factory.mktemp(name), mlflow_server), TWIN_OVERRIDES)
        config = config_from_dict(raw, env={})
        summary = run_sweep(config, BACKBONE, VARIANT, client=client, progress=_quiet)
        configs.append(config)
        summaries.append(summary)
        snapshots.append(_snapshot(client, summary))
    return TwinSweeps(configs[0], configs[1], summaries[0], summaries[1], snapshots[0], snapshots[1])


def _timeless(folders: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The metrics files without the wall-clock ``train_seconds``."""
    parsed = {name: json.loads(text) for name, text in folders.items()}
    return {name: {k: v for k, v in metrics.items() if k != "train_seconds"} for name, metrics in parsed.items()}


def _identities(snapshot: dict[str, Any]) -> list[tuple[int, str, float, str]]:
    return [(number, state, value, key) for number, state, value, key in snapshot["trials"]]


def test_same_config_in_a_fresh_root_gives_the_same_trials(twin_sweeps: TwinSweeps) -> None:
    a, b = twin_sweeps.snapshot_a, twin_sweeps.snapshot_b
    assert twin_sweeps.summary_a.study_key_hash == twin_sweeps.summary_b.study_key_hash
    assert twin_sweeps.summary_a.experiment_id != twin_sweeps.summary_b.experiment_id
    assert len(a["trials"]) == 2
    # Same trial identities, same metric values (bit for bit), same metrics files; different MLflow runs.
    assert _identities(a) == _identities(b)
    assert _timeless(a["folders"]) == _timeless(b["folders"])
    assert not set(a["runs"]) & set(b["runs"])
    assert twin_sweeps.summary_a.best_value == twin_sweeps.summary_b.best_value


def test_rerun_adds_nothing_and_extending_runs_only_the_new_trials(
    twin_sweeps: TwinSweeps, mlflow_client: MlflowClient
) -> None:
    config = twin_sweeps.config_a
    before = _snapshot(mlflow_client, twin_sweeps.summary_a)
    rerun = run_sweep(config, BACKBONE, VARIANT, client=mlflow_client, progress=_quiet)
    assert rerun.trials_run_now == 0
    assert rerun.trials_in_study == 2
    assert rerun.study_key_hash == twin_sweeps.summary_a.study_key_hash
    assert rerun.best_value == twin_sweeps.summary_a.best_value
    assert _snapshot(mlflow_client, rerun) == before, "a rerun must add no MLflow run, Optuna trial or folder"

    # n_trials is volatile: 3 trials keep the study identity and run exactly one more trial.
    extended_variant = config.hpo_config["variants"]["v1"] | {"n_trials": 3}
    extended = replace(config, hpo_config={**config.hpo_config, "variants": {"v1": extended_variant}})
    summary = run_sweep(extended, BACKBONE, VARIANT, client=mlflow_client, progress=_quiet)
    assert summary.study_key_hash == twin_sweeps.summary_a.study_key_hash
    assert (summary.trials_run_now, summary.trials_in_study) == (1, 3)
    after = _snapshot(mlflow_client, summary)
    assert len(after["runs"]) == 3 and len(after["folders"]) == 3
    assert after["trials"][:2] == before["trials"]
    assert [state for _, state, _, _ in after["trials"]] == ["COMPLETE"] * 3, "the new trial must not repeat an old one"
    assert len({key for _, _, _, key in after["trials"]}) == 3
    assert run_sweep(extended, BACKBONE, VARIANT, client=mlflow_client, progress=_quiet).trials_run_now == 0


def test_trials_finished_elsewhere_are_reused_when_the_study_is_lost(
    twin_sweeps: TwinSweeps, mlflow_client: MlflowClient
) -> None:
    """MLflow and the folder hold a finished trial but the study does not (a crash before Optuna recorded it):
    the rerun reuses the trial, it does not retrain or log it again."""
    summary = twin_sweeps.summary_b
    before = twin_sweeps.snapshot_b
    (Path(summary.study_dir) / contract.STUDY_DB_FILE).unlink()
    rerun = run_sweep(twin_sweeps.config_b, BACKBONE, VARIANT, client=mlflow_client, progress=_quiet)
    assert rerun.trials_run_now == 0
    assert rerun.trials_in_study == 2
    after = _snapshot(mlflow_client, rerun)
    assert after["runs"] == before["runs"]
    assert after["folders"] == before["folders"]
    assert _identities(after) == _identities(before)
    study = optuna.load_study(study_name=rerun.study_name, storage=rerun.storage_url)
    runs_by_key = {
        r.data.tags[contract.TAG_TRIAL_KEY_HASH]: r.info.run_id for r in _runs_of_study(mlflow_client, rerun)
    }
    for trial in study.get_trials():
        assert (
            trial.user_attrs[contract.ATTR_MLFLOW_RUN_ID] == runs_by_key[trial.user_attrs[contract.ATTR_TRIAL_KEY_HASH]]
        )


def test_run_sweep_rejects_unknown_backbone_and_variant(twin_sweeps: TwinSweeps, mlflow_client: MlflowClient) -> None:
    with pytest.raises(ValueError, match="backbone 'deep_transformer' is not configured"):
        run_sweep(twin_sweeps.config_a, "deep_transformer", "v1", client=mlflow_client, progress=_quiet)
    with pytest.raises(ValueError, match=r"variant 'v9' is not in hpo_config.variants: \['v1'\]"):
        run_sweep(twin_sweeps.config_a, BACKBONE, "v9", client=mlflow_client, progress=_quiet)


# ---------------------------------------------------------------------------------------------- dataset


def test_dataset_is_byte_identical_when_regenerated(
    tmp_path: Path, tiny_raw_config: Callable[..., dict[str, Any]]
) -> None:
    data_config = tiny_raw_config(tmp_path)["data_config"]
    first = write_dataset(data_config, tmp_path / "one")
    second = write_dataset(data_config, tmp_path / "two")
    assert first.fingerprint == second.fingerprint == data_fingerprint(data_config)
    names = ("train.jsonl", "validation.jsonl", "test.jsonl", "dataset.json")
    original = {name: (first.directory / name).read_bytes() for name in names}
    assert original == {name: (second.directory / name).read_bytes() for name in names}
    assert [len(original[f"{s}.jsonl"].splitlines()) for s in ("train", "validation", "test")] == [96, 32, 32]

    # A half-written dataset (no dataset.json) is rewritten, identically.
    (first.directory / "dataset.json").unlink()
    (first.directory / "train.jsonl").write_text("garbage\n", encoding="utf-8")
    write_dataset(data_config, tmp_path / "one")
    assert {name: (first.directory / name).read_bytes() for name in names} == original

    # The data depends on the seed; without a local_path, each data_config gets a folder named by its fingerprint.
    other = write_dataset({**data_config, "seed": 14, "local_path": None}, tmp_path / "one")
    assert other.directory != first.directory
    assert (other.directory / "train.jsonl").read_bytes() != original["train.jsonl"]

    batch = load_split(first.test, int(data_config["max_length"]))
    assert batch.input_ids.shape == batch.labels.shape == (32, 12)
    assert set(np.unique(batch.labels)) <= set(range(len(LABELS))) | {-100}
    assert ((batch.attention_mask == 0) == (batch.labels == -100)).all()


@pytest.mark.parametrize(
    "bad_line",
    [
        "not json",
        '{"input_ids": [5, 6], "labels": [0]}',
        '{"input_ids": [], "labels": []}',
        '{"input_ids": [5, "x"], "labels": [0, 0]}',
        '{"labels": [0]}',
        "[1, 2]",
    ],
)
def test_load_split_names_file_and_line_of_a_malformed_example(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "split.jsonl"
    path.write_text('{"input_ids": [5, 6], "labels": [0, 1]}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"split\.jsonl:3: malformed example"):
        load_split(path, 8)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_load_split_rejects_a_file_without_examples(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.jsonl holds no examples"):
        load_split(path, 8)


def test_load_split_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read test data .*absent\.jsonl"):
        load_split(tmp_path / "absent.jsonl", 8)


def test_a_trial_left_running_by_a_crashed_sweep_does_not_stop_the_rerun_short(
    make_config: Callable[..., PipelineConfig], tmp_path: Path, mlflow_client: MlflowClient
) -> None:
    config = make_config(tmp_path, backbones=["bilstm"], hpo_config={"variants": {"v2": None}})
    config.hpo_config["variants"]["v1"]["n_trials"] = 2
    variant_config = config.hpo_config["variants"]["v1"]
    study_key = study_key_hash("bilstm", "v1", data_fingerprint(config.data_config), variant_config, config.objective)
    folder = contract.study_dir(config.hpo_output_dir, "bilstm", study_key)
    folder.mkdir(parents=True)
    # What a sweep killed mid-trial leaves in its private study.db: a RUNNING trial nobody will finish.
    crashed = optuna.create_study(
        study_name=contract.study_name("bilstm", "v1"),
        storage=f"sqlite:///{folder / contract.STUDY_DB_FILE}",
        direction="maximize",
    )
    crashed.ask()
    summary = run_sweep(config, "bilstm", "v1", client=mlflow_client, progress=_quiet)
    assert summary.trials_in_study == 2 and summary.trials_run_now == 2


_RERUN_SWEEPS = """
import json, sys
from benchmark_pipeline.config import load_config
from benchmark_pipeline.demo.sweep import run_sweep
config = load_config(sys.argv[1], env={})
summaries = [run_sweep(config, b, v, progress=lambda m: None) for b in config.backbones for v in config.variants]
loaded = sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules)
print(json.dumps({"trained": sum(s.trials_run_now for s in summaries), "sweeps": len(summaries), "loaded": loaded}))
"""


def test_a_rerun_of_finished_sweeps_loads_no_torch(demo_sweeps: DemoSweeps, tmp_path: Path) -> None:
    """Every trial finished: the sweeps train nothing, and (a fresh process) never import torch or ONNX."""
    config_path, _raw = demo_sweeps.private_config_file(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", _RERUN_SWEEPS, str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == {"trained": 0, "sweeps": 4, "loaded": []}

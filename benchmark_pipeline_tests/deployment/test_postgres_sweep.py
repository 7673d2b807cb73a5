"""The embedded sweep on a shared Optuna storage (``optuna.sweep_storage``) on a real PostgreSQL server:
two worker processes, each with a root of its own (two "machines"), on one study of a fresh database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.config import load_config
from benchmark_pipeline.demo.sweep import SWEEP_HEARTBEAT_ENV, SWEEP_HEARTBEAT_GRACE_FACTOR, run_sweep
from benchmark_pipeline.selection.study_storage import close_storage, open_rdb_storage
from benchmark_pipeline_tests.postgres_server import PostgresServer

N_TRIALS = 5
#: Each worker imports torch, waits for the start signal, then sweeps: both create the schema and the study
#: at the same moment.
WORKER = """
import json, sys, time
from pathlib import Path
from benchmark_pipeline.config import load_config
from benchmark_pipeline.demo.sweep import SWEEP_HEARTBEAT_ENV, SWEEP_HEARTBEAT_GRACE_FACTOR, run_sweep
from benchmark_pipeline.demo.sweep import run_sweep
config = load_config(sys.argv[1])
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.01)
summary = run_sweep(config, "bilstm", "v1", progress=lambda message: None)
print("SUMMARY " + json.dumps(summary.to_dict()))
"""


def test_two_workers_on_one_postgres_study_reach_exactly_n_trials(
    postgres_server: PostgresServer, mlflow_server: str, tmp_path: Path, tiny_raw_config: Callable[..., dict[str, Any]]
) -> None:
    database = postgres_server.create_database("sweep")
    url = postgres_server.url(database)
    raw = tiny_raw_config(tmp_path / "shared", mlflow_server, backbones=["bilstm"], optuna={"sweep_storage": url})
    raw["hpo_config"]["variants"]["v1"]["n_trials"] = N_TRIALS
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    start = tmp_path / "start"
    workers = []
    for machine in ("machine-a", "machine-b"):
        env = {**os.environ, "BENCHMARK_PIPELINE_ROOT": str(tmp_path / machine), "PYTHONPATH": os.getcwd()}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(config_path), str(start)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(0.5)
    start.touch()
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"worker failed:\n{out}\n{err[-4000:]}"
    summaries = [
        json.loads(line.split(" ", 1)[1])
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("SUMMARY ")
    ]
    assert len(summaries) == 2

    storage = open_rdb_storage(url)
    try:
        study = optuna.load_study(study_name=contract.study_name("bilstm", "v1"), storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        close_storage(storage)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    # Exactly n_trials between them (MaxTrialsCallback alone lets each worker overshoot by one) ...
    assert len(finished) == N_TRIALS, [(t.number, t.state.name, t.user_attrs) for t in trials]
    # ... any extra trial a worker started is FAIL and marked surplus, never a second record of a trial ...
    for trial in trials:
        if trial not in finished:
            assert trial.state == optuna.trial.TrialState.FAIL and "surplus" in trial.user_attrs, trial
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    keys = [t.user_attrs[contract.ATTR_TRIAL_KEY_HASH] for t in complete]
    assert len(set(keys)) == len(keys)
    # ... and each COMPLETE trial has exactly one FINISHED MLflow run.
    client = MlflowClient(tracking_uri=mlflow_server)
    config = load_config(config_path, env={})
    experiment = client.get_experiment_by_name(config.mlflow.hpo_experiment_name("bilstm"))
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    assert sorted(r.data.tags[contract.TAG_TRIAL_KEY_HASH] for r in runs) == sorted(keys)
    assert sum(s["trials_run_now"] for s in summaries) == len(complete)
    assert all(s["storage_url"] == url for s in summaries)
    # The sweep storage is read by retrieval without being listed in optuna.storages.
    assert config.selection_config()["optuna_storages"] == [url]


def test_a_trial_left_running_by_a_dead_worker_is_failed_by_heartbeat_and_replaced(
    postgres_server: PostgresServer,
    mlflow_server: str,
    tmp_path: Path,
    tiny_raw_config: Callable[..., dict[str, Any]],
    monkeypatch,
) -> None:
    database = postgres_server.create_database("sweep_heartbeat")
    url = postgres_server.url(database)
    raw = tiny_raw_config(tmp_path / "root", mlflow_server, backbones=["bilstm"], optuna={"sweep_storage": url})
    raw["hpo_config"]["variants"]["v1"]["n_trials"] = 3
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    start = tmp_path / "start"
    start.touch()
    heartbeat_s = 1  # the deployment setting, short so the test need not wait two minutes
    env = {**os.environ, SWEEP_HEARTBEAT_ENV: str(heartbeat_s), "PYTHONPATH": os.getcwd()}
    doomed = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(config_path), str(start)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    storage = open_rdb_storage(url)
    try:
        deadline = time.monotonic() + 120
        running: list[optuna.trial.FrozenTrial] = []
        while not running:
            assert doomed.poll() is None, (
                f"the worker ended before it was killed: {doomed.stderr.read()[-3000:] if doomed.stderr else ''}"
            )
            assert time.monotonic() < deadline, "the worker never started a trial"
            names = [s.study_name for s in storage.get_all_studies()]
            if names:
                study = optuna.load_study(study_name=names[0], storage=storage)
                running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            time.sleep(0.2)
        os.kill(doomed.pid, signal.SIGKILL)  # the worker dies mid-trial: its trial stays RUNNING
        doomed.wait(timeout=30)
        time.sleep(heartbeat_s * SWEEP_HEARTBEAT_GRACE_FACTOR + 1)

        monkeypatch.setenv(SWEEP_HEARTBEAT_ENV, str(heartbeat_s))
        summary = run_sweep(load_config(config_path, env={}), "bilstm", "v1", progress=lambda message: None)
        trials = {
            t.number: t
            for t in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
        }
    finally:
        close_storage(storage)
    # The dead worker's trial was failed by the live worker (stale heartbeat), and replaced: exactly 3 finished.
    assert trials[running[0].number].state == optuna.trial.TrialState.FAIL
    finished = [
        t for t in trials.values() if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 3 and summary.trials_in_study == 3
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]

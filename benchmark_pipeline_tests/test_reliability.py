"""Faults injected for real: a killed MLflow server, a SIGKILLed benchmark, eight concurrent benchmarks of one
key. Nothing finished is lost; nothing is benchmarked twice."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline import (
    benchmark_best_trials,
    build_benchmark_key,
    filter_missing_benchmarks,
    retrieve_best_trials,
)
from benchmark_pipeline.benchmarking.cache import cache_dir, read_cache_entry
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.config import config_from_dict
from benchmark_pipeline.demo.dataset import write_dataset
from benchmark_pipeline.demo.sweep import run_sweep
from benchmark_pipeline.selection.records import SourceScan, TrialCandidate
from benchmark_pipeline_tests.benchmark_workers import (
    PROJECT_ROOT,
    WORKER_SCRIPT,
    best_from_disk,
    start_together_and_collect,
    worker_spec,
)
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.mlflow_server import MlflowServer
from benchmark_pipeline_tests.tiny_config import tiny_config_dict, unique_suffix


def _benchmark_runs(client: MlflowClient, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], run_view_type=ViewType.ALL)


def test_mlflow_killed_during_retrieval_falls_back_within_seconds(
    private_mlflow_server: MlflowServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = tiny_config_dict(tmp_path, private_mlflow_server.uri, suffix=unique_suffix())
    raw["backbones"] = ["bilstm"]
    raw["hpo_config"]["variants"] = {"v1": {**raw["hpo_config"]["variants"]["v1"], "n_trials": 2}}
    config = config_from_dict(raw, env={})
    client = MlflowClient(private_mlflow_server.uri)
    run_sweep(config, "bilstm", "v1", client=client, progress=lambda _m: None)
    args = (
        ["bilstm"],
        config.hpo_experiments(),
        None,
        config.selection_config(),
        config.hpo_config,
        config.data_config,
        config.root_dir,
        config.environment,
    )
    before = retrieve_best_trials(*args, mlflow_client=client)["bilstm"]
    assert before["source"] == "mlflow"

    private_mlflow_server.kill()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        after = retrieve_best_trials(*args, mlflow_client=client)["bilstm"]
    assert time.monotonic() - started < 10
    assert after["source"] == "study"
    assert after["candidates"]["mlflow"]["available"] is False
    assert {k: after[k] for k in ("trial_id", "run_id", "variant", "metric")} == {
        k: before[k] for k in ("trial_id", "run_id", "variant", "metric")
    }
    assert any("MLflow is unavailable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_mlflow_killed_before_logging_keeps_the_result_and_the_next_pass_uploads_it(
    demo_sweeps: DemoSweeps, private_mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    config = demo_sweeps.config
    best = best_from_disk(demo_sweeps)
    experiment = {"name": f"benchmarks-{unique_suffix()}"}
    client = MlflowClient(private_mlflow_server.uri)
    steps = len(config.benchmark_config["backends"]) * len(config.benchmark_config["batch_sizes"])
    seen = []

    def kill_server_at_the_last_step(message: str) -> None:
        seen.append(message)
        if len(seen) == steps:  # the benchmark is done; MLflow dies before anything is logged
            private_mlflow_server.kill()

    test_data = write_dataset(config.data_config, config.root_dir).test
    args = (test_data, tmp_path, config.environment, config.data_config, config.hpo_config, config.benchmark_config)
    result = benchmark_best_trials(best, *args, experiment, client, demo_sweeps.hpo_dir, kill_server_at_the_last_step)[
        "bilstm"
    ]
    key = key_for_trial(best["bilstm"], config.data_config, config.benchmark_config)
    assert result["status"] == "benchmarked" and result["mlflow_logged"] is False
    cached = read_cache_entry(cache_dir(tmp_path, config.environment), key)
    assert cached is not None and cached["mlflow"]["logged"] is False
    assert cached["result"]["measurements"] == result["measurements"]

    private_mlflow_server.start()  # same port, same store
    stale = _benchmark_runs(client, experiment["name"])
    assert [r.info.status for r in stale] == ["RUNNING"]
    remaining = filter_missing_benchmarks(
        best, experiment, config.benchmark_config, config.data_config, tmp_path, config.environment, client
    )
    assert remaining == {}
    runs = {r.info.status: r for r in _benchmark_runs(client, experiment["name"])}
    assert set(runs) == {"FINISHED"}  # the run created before the outage is completed, not duplicated
    assert runs["FINISHED"].info.run_id == result["mlflow_run_id"]
    assert runs["FINISHED"].data.tags["benchmark_key"] == key
    uploaded = json.loads(
        Path(client.download_artifacts(runs["FINISHED"].info.run_id, "benchmark.json", str(tmp_path))).read_text()
    )
    assert uploaded["measurements"] == result["measurements"] and uploaded["started_at"] == result["started_at"]
    assert read_cache_entry(cache_dir(tmp_path, config.environment), key)["mlflow"] == {
        "run_id": runs["FINISHED"].info.run_id,
        "logged": True,
    }

    # And the next benchmark pass runs nothing.
    again = benchmark_best_trials(best, *args, experiment, client, demo_sweeps.hpo_dir)["bilstm"]
    assert again["status"] == "existing" and again["mlflow_run_id"] == runs["FINISHED"].info.run_id
    assert len(_benchmark_runs(client, experiment["name"])) == 1


def test_sigkill_mid_benchmark_leaves_nothing_that_blocks_a_rerun(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = demo_sweeps.config
    best = best_from_disk(demo_sweeps)
    experiment = {"name": f"benchmarks-{unique_suffix()}"}
    ready = tmp_path / "ready"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        json.dumps(worker_spec(demo_sweeps, best, tmp_path, experiment, mlflow_server, ready_file=str(ready)))
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(spec_path)], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the benchmark process died or never started measuring"
        )
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    client = MlflowClient(mlflow_server)
    key = key_for_trial(best["bilstm"], config.data_config, config.benchmark_config)
    assert [r.info.status for r in _benchmark_runs(client, experiment["name"])] == ["RUNNING"]
    assert read_cache_entry(cache_dir(tmp_path, config.environment), key) is None
    assert not list(cache_dir(tmp_path, config.environment).glob("*.json"))
    # The stale RUNNING run does not block: the next pass finds the trial missing and benchmarks it.
    remaining = filter_missing_benchmarks(
        best, experiment, config.benchmark_config, config.data_config, tmp_path, config.environment, client
    )
    assert list(remaining) == ["bilstm"]
    test_data = write_dataset(config.data_config, config.root_dir).test
    result = benchmark_best_trials(
        remaining,
        test_data,
        tmp_path,
        config.environment,
        config.data_config,
        config.hpo_config,
        config.benchmark_config,
        experiment,
        client,
        demo_sweeps.hpo_dir,
    )
    assert result["bilstm"]["status"] == "benchmarked"
    assert sorted(r.info.status for r in _benchmark_runs(client, experiment["name"])) == ["FINISHED", "RUNNING"]


def test_eight_concurrent_benchmarks_of_one_key_run_it_once(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    best = best_from_disk(demo_sweeps, "tiny_transformer")
    experiment = {"name": f"benchmarks-{unique_suffix()}"}
    client = MlflowClient(mlflow_server)
    client.create_experiment(experiment["name"])  # created once up front, as a deployment would have it
    spec_path = tmp_path / "spec.json"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # Every process imports its libraries first; when all eight are ready they start at the same moment.
    spec_path.write_text(
        json.dumps(worker_spec(demo_sweeps, best, tmp_path, experiment, mlflow_server, barrier_dir=str(barrier)))
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(spec_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    assert sorted(start_together_and_collect(processes, barrier)) == ["benchmarked"] + ["existing"] * 7
    runs = _benchmark_runs(client, experiment["name"])
    assert [r.info.status for r in runs] == ["FINISHED"]


_candidates = st.lists(
    st.builds(
        TrialCandidate,
        source=st.just("mlflow"),
        backbone=st.just("bb"),
        variant=st.sampled_from(["v1", "v2"]),
        trial_id=st.text(alphabet="0123456789abcdef", min_size=4, max_size=8),
        metric=st.sampled_from([0.1, 0.5, 0.5, 0.9, 0.9]),
        trial_number=st.one_of(st.none(), st.integers(0, 5)),
        run_id=st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=4, max_size=8)),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda c: (c.trial_id, c.run_id),
)


@settings(max_examples=200, deadline=None)
@given(
    candidates=_candidates, seed=st.randoms(use_true_random=False), direction=st.sampled_from(["maximize", "minimize"])
)
def test_selection_is_invariant_under_permutation_of_the_runs(
    candidates: list[TrialCandidate], seed: Any, direction: str
) -> None:
    shuffled = list(candidates)
    seed.shuffle(shuffled)
    for variant in (None, "v1", "v2"):
        assert SourceScan("mlflow", "bb", True, eligible=candidates).best(direction, variant) == SourceScan(
            "mlflow", "bb", True, eligible=shuffled
        ).best(direction, variant)


def test_unsafe_names_cannot_reach_filters_paths_or_partitions(tmp_path: Path) -> None:
    data_config = {"version": "1", "name": "x"}
    for unsafe in ("bb' OR '1'='1", "../../etc", "a/b", "a|b", "a\x00b", "tab\tname", 'quote"d'):
        with pytest.raises(ValueError):
            build_benchmark_key(unsafe, "v1", None, "abc", data_config, {})
        with pytest.raises(ValueError):
            build_benchmark_key("bb", unsafe, None, "abc", data_config, {})
        with pytest.raises(ValueError):
            retrieve_best_trials([unsafe], {}, None, {}, {"objective": {"metric": "m"}}, data_config, tmp_path, "test")

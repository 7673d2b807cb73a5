"""Faults the first reliability pass did not cover, injected for real (issue #12).

A real HTTP proxy (:mod:`benchmark_pipeline_tests.fault_proxy`) sits between the MLflow client and the real
MLflow server and delays, fails, hangs or drops; cache folders are made read-only or full with real tmpfs
mounts (as root, else the test is skipped and says why); symbolic links are real; benchmark processes and a
``dagster asset materialize`` are really sent SIGTERM. Each test asserts that nothing finished is lost or
duplicated, that the pick is right, and how long the fallback took.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline import benchmark_best_trials, filter_missing_benchmarks, retrieve_best_trials
from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path, read_cache_entry, write_cache_entry
from benchmark_pipeline.benchmarking.claims import ClaimFileError, benchmark_claim, claim_path, try_benchmark_claim
from benchmark_pipeline.benchmarking.existence import BENCHMARK_KEY_TAG
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.mlflow_logging import upload_pending_benchmarks
from benchmark_pipeline.benchmarking.model_files import resolve_model_dir
from benchmark_pipeline.benchmarking.orchestrator import BenchmarkFailedError
from benchmark_pipeline.config import config_from_dict
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.defs.sensors import benchmark_sensor
from benchmark_pipeline.demo.dataset import write_dataset
from benchmark_pipeline_tests.builders import complete_result
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.fault_proxy import FaultProxy, wait_until
from benchmark_pipeline_tests.tiny_config import tiny_config_dict, unique_suffix

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEARCH = "/api/2.0/mlflow/runs/search"
CREATE = "/api/2.0/mlflow/runs/create"


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def proxy(mlflow_server: str) -> Iterator[FaultProxy]:
    faults = FaultProxy(mlflow_server)
    try:
        yield faults
    finally:
        faults.close()


@pytest.fixture
def http_bounds(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``http_bounds(timeout_s, retries)``: MLflow's per-request bounds for this test only (the env MLflow reads)."""

    def apply(timeout_s: int, retries: int) -> None:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

    return apply


def _config(demo: DemoSweeps, root: Path, uri: str, **mlflow: Any) -> Any:
    """A config over the demo's sweeps (their HPO experiments, folders and dataset), tracking to ``uri``."""
    raw = tiny_config_dict(root, uri, suffix=unique_suffix())
    raw["mlflow"].update({"hpo_experiment_prefix": demo.config.mlflow.hpo_experiment_prefix, **mlflow})
    raw["hpo_output_dir"] = str(demo.hpo_dir)
    raw["data_config"]["local_path"] = str(demo.config.root_dir / demo.config.data_config["local_path"])
    raw["benchmark_config"]["test_data"] = str(Path(raw["data_config"]["local_path"]) / "test.jsonl")
    return config_from_dict(raw, env={})


def _retrieve(config: Any, client: MlflowClient | None) -> dict[str, Any]:
    return retrieve_best_trials(
        list(config.backbones), config.hpo_experiments(), None, config.selection_config(), config.hpo_config,
        config.data_config, config.root_dir, config.environment, mlflow_client=client,
    )  # fmt: skip


def _benchmark(config: Any, trials: dict[str, Any], client: MlflowClient | None) -> dict[str, Any]:
    return benchmark_best_trials(
        trials, None, config.root_dir, config.environment, config.data_config, config.hpo_config,
        config.benchmark_config, config.benchmark_experiment(), client, config.hpo_output_dir,
    )  # fmt: skip


def _filter(config: Any, trials: dict[str, Any], client: MlflowClient | None) -> dict[str, Any]:
    return filter_missing_benchmarks(
        trials,
        config.benchmark_experiment(),
        config.benchmark_config,
        config.data_config,
        config.root_dir,
        config.environment,
        client,
    )


def _runs(client: MlflowClient, config: Any, view: int = ViewType.ACTIVE_ONLY) -> list[Any]:
    found = client.get_experiment_by_name(config.mlflow.benchmark_experiment)
    return [] if found is None else client.search_runs([found.experiment_id], run_view_type=view)


def _statuses_by_key(client: MlflowClient, config: Any) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for run in _runs(client, config):
        by_key.setdefault(run.data.tags.get(BENCHMARK_KEY_TAG, ""), []).append(run.info.status)
    return {k: sorted(v) for k, v in by_key.items()}


def _key(config: Any, info: dict[str, Any]) -> str:
    return key_for_trial(info, config.data_config, config.benchmark_config)


def _tmpfs(path: Path, size: str, *options: str) -> None:
    """Mount a real tmpfs at ``path`` (needs root); skip the test, saying why, where that is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); not available here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# ------------------------------------------------------------------------------------ availability


def test_a_busy_health_check_is_waited_for_not_taken_for_dead(
    demo_sweeps: DemoSweeps, proxy: FaultProxy, tmp_path: Path, http_bounds: Any
) -> None:
    http_bounds(10, 2)
    config = _config(demo_sweeps, tmp_path, proxy.uri, timeout_s=10)
    client = MlflowClient(proxy.uri)
    best = _retrieve(config, client)
    first = _benchmark(config, {"bilstm": best["bilstm"]}, client)["bilstm"]
    assert first["status"] == "benchmarked"

    proxy.add("/health", "delay", seconds=5)
    started = time.monotonic()
    again = _retrieve(config, client)
    waited = time.monotonic() - started
    assert waited >= 5, "the /health answer was not waited for"
    assert again["bilstm"]["source"] == "mlflow" and again["bilstm"]["trial_id"] == best["bilstm"]["trial_id"]
    # The FINISHED benchmark is found, not measured again, and MLflow and the cache agree.
    second = _benchmark(config, {"bilstm": again["bilstm"]}, client)["bilstm"]
    assert second["status"] == "existing" and second["mlflow_run_id"] == first["mlflow_run_id"]
    assert _statuses_by_key(client, config) == {first["benchmark_key"]: ["FINISHED"]}
    cached = read_cache_entry(cache_dir(config.root_dir, config.environment), first["benchmark_key"])
    assert cached is not None and cached["result"]["measurements"] == first["measurements"]


@pytest.mark.parametrize("fault", ["503 on every API call", "runs/search hangs"])
def test_a_failing_or_hanging_server_falls_back_within_the_configured_bound(
    demo_sweeps: DemoSweeps, proxy: FaultProxy, tmp_path: Path, http_bounds: Any, fault: str
) -> None:
    timeout_s, retries = 2, 1
    http_bounds(timeout_s, retries)
    config = _config(demo_sweeps, tmp_path, proxy.uri, timeout_s=timeout_s, max_retries=retries)
    reference = _retrieve(config, None)  # what the study and disk pick without MLflow
    if fault.startswith("503"):
        proxy.add("/api/", "status", code=503)
    else:
        proxy.add(SEARCH, "hang", seconds=60)
    started = time.monotonic()
    best = _retrieve(config, MlflowClient(proxy.uri))
    elapsed = time.monotonic() - started
    # Bound: one backbone's calls give up within (retries + 1) x timeout + back-off; later backbones skip MLflow.
    assert elapsed < 4 * (retries + 1) * timeout_s + 10, f"fell back only after {elapsed:.1f}s"
    for backbone, info in best.items():
        assert info["source"] != "mlflow" and info["candidates"]["mlflow"]["available"] is False
        assert info["trial_id"] == reference[backbone]["trial_id"]
    print(f"{fault}: fell back to {sorted({i['source'] for i in best.values()})} in {elapsed:.1f}s")


def test_a_connection_dropped_after_the_run_was_created_leaves_one_run(
    demo_sweeps: DemoSweeps, proxy: FaultProxy, tmp_path: Path, http_bounds: Any
) -> None:
    http_bounds(10, 2)
    config = _config(demo_sweeps, tmp_path, proxy.uri)
    client = MlflowClient(proxy.uri)
    best = _retrieve(config, client)
    client.create_experiment(config.mlflow.benchmark_experiment)
    proxy.add(CREATE, "drop_after_forward", times=1)  # the server creates the run; its answer is lost
    result = _benchmark(config, {"bilstm": best["bilstm"]}, client)["bilstm"]
    assert proxy.hits[CREATE] >= 2, "MLflow's client did not retry the create (the fault did not happen)"
    assert result["status"] == "benchmarked" and result["mlflow_logged"] is True
    assert _statuses_by_key(client, config) == {result["benchmark_key"]: ["FINISHED"]}, "an orphan RUNNING run was left"


# ------------------------------------------------------------------------------------- persistence


def test_a_cache_file_that_cannot_be_written_loses_nothing_and_stops_nothing(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    best = _retrieve(config, client)
    blocked = _key(config, best["bilstm"])
    cache_path(cache_dir(config.root_dir, config.environment), blocked).mkdir(
        parents=True
    )  # a folder where the file goes
    results = _benchmark(config, best, client)
    assert results["bilstm"]["status"] == "benchmarked" and results["bilstm"]["mlflow_logged"] is True
    assert results["tiny_transformer"]["status"] == "benchmarked", "the other trial was not benchmarked"
    assert all(statuses == ["FINISHED"] for statuses in _statuses_by_key(client, config).values())
    assert len(_statuses_by_key(client, config)) == 2
    # Nothing is measured again: MLflow holds it.
    assert _filter(config, best, client) == {}


def test_a_read_only_cache_folder_keeps_the_result_in_mlflow(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    best = _retrieve(config, client)
    cache = cache_dir(config.root_dir, config.environment)
    _tmpfs(cache, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        results = _benchmark(config, best, client)
    finally:
        _umount(cache)
    assert {b: (r["status"], r["mlflow_logged"]) for b, r in results.items()} == {
        "bilstm": ("benchmarked", True),
        "tiny_transformer": ("benchmarked", True),
    }
    assert sorted(_statuses_by_key(client, config).values()) == [["FINISHED"], ["FINISHED"]]


def test_a_full_disk_and_a_failing_mlflow_fail_the_trial_and_close_its_run(
    demo_sweeps: DemoSweeps, proxy: FaultProxy, tmp_path: Path, http_bounds: Any
) -> None:
    http_bounds(5, 0)
    config = _config(demo_sweeps, tmp_path, proxy.uri)
    client = MlflowClient(proxy.uri)
    best = _retrieve(config, client)
    cache = cache_dir(config.root_dir, config.environment)
    _tmpfs(cache, "4k")
    try:
        with open(cache / "filler", "wb") as filler:  # fill the disk up
            try:
                filler.write(b"x" * 1_000_000)
            except OSError:
                pass
        proxy.add(
            "/api/2.0/mlflow-artifacts/", "status", code=503
        )  # benchmark.json cannot be logged; closing the run works
        with pytest.raises(BenchmarkFailedError) as raised:
            _benchmark(config, {"bilstm": best["bilstm"]}, client)
    finally:
        _umount(cache)
    key = _key(config, best["bilstm"])
    message = raised.value.failures[key]
    assert "reached no store" in message and "No space left" in message and str(cache_path(cache, key)) in message
    runs = _runs(client, config)
    assert [r.info.status for r in runs] == ["FAILED"] and "reached no store" in runs[0].data.tags["error"]


def test_concurrent_uploads_of_one_pending_result_log_it_once(mlflow_server: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"benchmarks-{unique_suffix()}")
    key = "bilstm:v1:unknown:abc123:1-0123456789abcdef:0123456789abcdef"
    directory = tmp_path / "cache"
    write_cache_entry(directory, key, complete_result(key), None, mlflow_logged=False)
    barrier = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mlflow.tracking import MlflowClient
        from benchmark_pipeline.benchmarking.mlflow_logging import upload_pending_benchmarks
        client = MlflowClient({mlflow_server!r})
        while not Path({str(barrier)!r}).exists():
            time.sleep(0.005)
        print(upload_pending_benchmarks(client, {experiment_id!r}, Path({str(directory)!r})))
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(3)  # both have imported mlflow and wait at the barrier
    barrier.touch()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
    assert [r.info.status for r in runs] == ["FINISHED"], "one pending result became two runs"
    assert read_cache_entry(directory, key)["mlflow"] == {"run_id": runs[0].info.run_id, "logged": True}


def test_four_results_pending_after_an_outage_become_one_finished_run_each(mlflow_server: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"benchmarks-{unique_suffix()}")
    directory = tmp_path / "cache"
    keys = [f"bilstm:v{n}:unknown:abc{n}:1-0123456789abcdef:0123456789abcdef" for n in range(4)]
    for key in keys:
        write_cache_entry(directory, key, complete_result(key), None, mlflow_logged=False)
    assert sorted(upload_pending_benchmarks(client, experiment_id, directory)) == keys
    assert upload_pending_benchmarks(client, experiment_id, directory) == []  # a second pass uploads nothing
    runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
    assert sorted((r.data.tags[BENCHMARK_KEY_TAG], r.info.status) for r in runs) == [(k, "FINISHED") for k in keys]


# -------------------------------------------------------------------------------------- cache trust


@pytest.mark.parametrize("damage", ["another key's result", "empty result"])
def test_a_damaged_cache_entry_is_not_trusted_and_the_trial_is_benchmarked(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path, damage: str
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    best = {"bilstm": _retrieve(config, client)["bilstm"]}
    key = _key(config, best["bilstm"])
    other = key.replace(":v", ":x", 1)
    directory = cache_dir(config.root_dir, config.environment)
    path = cache_path(directory, key)
    path.parent.mkdir(parents=True)
    inner = complete_result(other) if damage.startswith("another") else {}
    path.write_text(
        json.dumps(
            {"schema_version": 1, "benchmark_key": key, "mlflow": {"run_id": None, "logged": False}, "result": inner}
        )
    )
    for _ in range(2):  # two passes: each must leave exactly what one benchmark leaves
        todo = _filter(config, best, client)
        if todo:
            _benchmark(config, todo, client)
    assert _statuses_by_key(client, config) == {key: ["FINISHED"]}, (
        "nothing may be uploaded into the wrong run, no RUNNING run left"
    )
    assert read_cache_entry(directory, key)["result"]["benchmark_key"] == key


def test_a_logged_entry_whose_run_is_gone_is_uploaded_again(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    best = {"bilstm": _retrieve(config, client)["bilstm"]}
    result = _benchmark(config, best, client)["bilstm"]
    client.delete_run(result["mlflow_run_id"])  # a restored backup without it
    assert _filter(config, best, client) == {}, "the cache still holds the result"
    runs = _runs(client, config)
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].info.run_id != result["mlflow_run_id"]
    assert (
        read_cache_entry(cache_dir(config.root_dir, config.environment), result["benchmark_key"])["mlflow"]["run_id"]
        == runs[0].info.run_id
    )


def test_a_finished_run_without_benchmark_json_does_not_count_and_is_benchmarked(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    best = {"bilstm": _retrieve(config, client)["bilstm"]}
    key = _key(config, best["bilstm"])
    experiment_id = client.create_experiment(config.mlflow.benchmark_experiment)
    closed = client.create_run(experiment_id, tags={BENCHMARK_KEY_TAG: key}).info.run_id
    client.set_terminated(closed, "FINISHED")  # a cleanup script closed a RUNNING benchmark run
    assert list(_filter(config, best, client)) == ["bilstm"]
    result = _benchmark(config, best, client)["bilstm"]
    assert result["status"] == "benchmarked" and result["mlflow_run_id"] != closed


# ----------------------------------------------------------------------------------------- symlinks


def test_a_claim_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    key = "bilstm:v1:unknown:abc:1-0123456789abcdef:0123456789abcdef"
    directory = tmp_path / "cache"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    link = claim_path(directory, key)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(ClaimFileError, match="symbolic link"), benchmark_claim(directory, key):
        pass
    with pytest.raises(ClaimFileError), try_benchmark_claim(directory, key):
        pass
    assert outside.read_text() == "keep me\n"


def test_model_and_cache_files_linking_out_of_the_roots_are_refused(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    info = _retrieve(config, None)["bilstm"]
    hpo_copy = tmp_path / "hpo"
    shutil.copytree(demo_sweeps.hpo_dir, hpo_copy)
    trial = hpo_copy / Path(info["trial_dir"]).relative_to(demo_sweeps.hpo_dir)
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.copyfile(trial / "model.onnx", elsewhere)
    (trial / "model.onnx").unlink()
    (trial / "model.onnx").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="outside the configured HPO folders"):
        resolve_model_dir({**info, "trial_dir": str(trial)}, [hpo_copy.resolve()], None, tmp_path / "download")

    key = _key(config, info)
    directory = cache_dir(config.root_dir, config.environment)
    planted = tmp_path / "planted.json"
    planted.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "benchmark_key": key,
                "mlflow": {"run_id": None, "logged": True},
                "result": complete_result(key),
            }
        )
    )
    cache_path(directory, key).parent.mkdir(parents=True)
    cache_path(directory, key).symlink_to(planted)
    assert read_cache_entry(directory, key) is None, "a cache file linking elsewhere was trusted"


# ------------------------------------------------------------------------------------------ signals

_BENCHMARK_WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mlflow.tracking import MlflowClient
    from benchmark_pipeline import benchmark_best_trials
    spec = json.loads(Path(sys.argv[1]).read_text())
    benchmark_best_trials(spec["best"], None, Path(spec["root"]), spec["environment"], spec["data_config"], spec["hpo_config"],
                          spec["benchmark_config"], spec["experiment"], MlflowClient(spec["uri"]), Path(spec["hpo_dir"]))
    """
)


def _default_sigterm() -> None:
    """In the child, before exec: SIGTERM's default disposition, as a process started by a shell or a scheduler has.

    An ignored signal stays ignored across exec, and this test process may ignore SIGTERM by then: Dagster
    maps SIGTERM to SIGINT's handler when it executes in-process (earlier tests do), and SIGINT is ignored
    in jobs a non-interactive shell starts in the background.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _wait_for_running_run(client: MlflowClient, config: Any, process: subprocess.Popen[Any]) -> None:
    assert wait_until(
        lambda: any(r.info.status == "RUNNING" for r in _runs(client, config)) or process.poll() is not None, 180
    )
    assert process.poll() is None, "the benchmark process ended before it was signalled"
    time.sleep(1.0)  # inside the measurement


def _assert_killed_and_released(client: MlflowClient, config: Any, key: str) -> None:
    assert [r.info.status for r in _runs(client, config)] == ["KILLED"]
    directory = cache_dir(config.root_dir, config.environment)
    assert read_cache_entry(directory, key) is None
    with try_benchmark_claim(directory, key) as claimed:
        assert claimed, "the claim was not released"


def test_sigterm_of_a_benchmark_process_closes_its_run_killed(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    config = _config(demo_sweeps, tmp_path, mlflow_server)
    slow = {**config.benchmark_config, "min_duration_s": 60.0}  # long enough to be signalled mid-measurement
    best = {"bilstm": _retrieve(config, None)["bilstm"]}
    spec = {"best": best, "root": str(config.root_dir), "environment": config.environment, "data_config": config.data_config,
            "hpo_config": config.hpo_config, "benchmark_config": slow, "experiment": config.benchmark_experiment(),
            "uri": mlflow_server, "hpo_dir": str(config.hpo_output_dir)}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    process = subprocess.Popen(
        [sys.executable, "-c", _BENCHMARK_WORKER, str(tmp_path / "spec.json")],
        cwd=PROJECT_ROOT,
        preexec_fn=_default_sigterm,
    )
    client = MlflowClient(mlflow_server)
    try:
        _wait_for_running_run(client, config, process)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    # Seconds when the machine is idle; a loaded 2-core machine once took 57 s (MLflow calls closing the run).
    assert time.monotonic() - started < 90, "the benchmark process did not end on SIGTERM"
    _assert_killed_and_released(client, config, key_for_trial(best["bilstm"], config.data_config, slow))


def test_sigterm_of_dagster_asset_materialize_closes_its_run_killed(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path
) -> None:
    import dagster as dg

    config = _config(demo_sweeps, tmp_path, mlflow_server)
    raw = yaml.safe_load(yaml.safe_dump({**tiny_config_dict(tmp_path, mlflow_server)}))
    raw["mlflow"] = {
        "tracking_uri": mlflow_server,
        "hpo_experiment_prefix": config.mlflow.hpo_experiment_prefix,
        "benchmark_experiment": config.mlflow.benchmark_experiment,
    }
    raw["hpo_output_dir"] = str(config.hpo_output_dir)
    raw["data_config"] = config.data_config
    raw["benchmark_config"] = {**config.benchmark_config, "min_duration_s": 60.0, "stale_running_after_s": 1}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("backbone", ["bilstm"])
    env = {**os.environ, "DAGSTER_HOME": str(home), "BENCHMARK_PIPELINE_CONFIG": str(tmp_path / "pipeline.yaml")}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "benchmark_pipeline.definitions",
               "--select", "best_trial,benchmark_result", "--partition", "bilstm"]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_default_sigterm,
    )
    client = MlflowClient(mlflow_server)
    try:
        _wait_for_running_run(client, config, process)
        # A manual materialization in progress is seen by the sensor, which launched nothing itself; and its
        # MLflow run, RUNNING for over stale_running_after_s (1 s here), is named in the skip reason.
        sensor_resources = {
            "settings": PipelineSettings(config_path=str(tmp_path / "pipeline.yaml")),
            "mlflow": MlflowResource(tracking_uri=mlflow_server),
        }
        with dg.DagsterInstance.from_config(str(home)) as instance:
            tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=sensor_resources))
        assert isinstance(tick, dg.SkipReason) and "running or requested: bilstm (key" in tick.skip_message, tick
        assert "1 MLflow benchmark run(s) RUNNING for longer than stale_running_after_s" in tick.skip_message
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    loaded = config_from_dict(raw, env={})
    info = _retrieve(loaded, client)["bilstm"]
    _assert_killed_and_released(client, loaded, key_for_trial(info, loaded.data_config, loaded.benchmark_config))


def test_the_demo_dataset_is_left_alone_by_these_tests(demo_sweeps: DemoSweeps) -> None:
    # The configs above read the demo's dataset in place; nothing here may write into it.
    data = demo_sweeps.config.root_dir / demo_sweeps.config.data_config["local_path"]
    assert sorted(p.name for p in data.iterdir()) == ["dataset.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    assert write_dataset(demo_sweeps.config.data_config, demo_sweeps.config.root_dir).directory == data


def test_a_benchmark_run_left_running_for_hours_is_reported_in_the_asset_metadata(
    dagster_setup: dict[str, Any],
) -> None:
    import dagster as dg

    from benchmark_pipeline.defs.benchmark_assets import benchmark_result
    from benchmark_pipeline.defs.selection_assets import best_trial

    config, resources, instance, client = (dagster_setup[k] for k in ("config", "resources", "instance", "client"))
    info = dg.materialize([best_trial], partition_key="bilstm", instance=instance, resources=resources).output_for_node(
        "best_trial"
    )
    key = _key(config, info)
    experiment_id = client.create_experiment(config.mlflow.benchmark_experiment)
    seven_hours_ago = int((time.time() - 7 * 3600) * 1000)
    orphan = client.create_run(
        experiment_id, start_time=seven_hours_ago, tags={BENCHMARK_KEY_TAG: key}
    ).info.run_id  # its process died
    result = dg.materialize(
        [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("benchmark_result")
    )
    assert metadata["status"].value == "benchmarked", "a stale RUNNING run must not block the benchmark"
    stale = metadata["stale_running_runs"].value
    assert [s["run_id"] for s in stale] == [orphan] and stale[0]["running_for_s"] >= 7 * 3600 - 60

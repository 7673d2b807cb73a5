"""The benchmarking layer against real parts: the session's MLflow server over HTTP, real Optuna studies, and
ONNX Runtime / PyTorch on the models of the session's demo sweeps (2 backbones x 2 variants x 3 trials).

The trained models are shared by the whole session (``demo_sweeps``, read-only; ``trained`` here); every test
that writes benchmarks uses its own root folder and its own benchmark experiment, so tests do not see each
other's results.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper

from benchmark_pipeline.benchmarking import (
    BenchmarkFailedError,
    ModelFileError,
    ProviderMismatchError,
    benchmark_already_exists,
    benchmark_best_trials,
    benchmark_exists_in_mlflow,
    benchmark_exists_on_disk,
    build_benchmark_key,
    fetch_benchmark_runs,
    filter_missing_benchmarks,
    format_benchmark_table,
    key_for_trial,
    run_benchmark,
)
from benchmark_pipeline.benchmarking.backends import CPU_PROVIDER, CUDA_PROVIDER
from benchmark_pipeline.benchmarking.backends.onnxruntime import open_onnx_session
from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path, write_cache_entry
from benchmark_pipeline.benchmarking.existence import BENCHMARK_KEY_TAG, RESULT_LOGGED_TAG
from benchmark_pipeline.benchmarking.measurement import MAX_ITERATIONS, summarize, time_calls
from benchmark_pipeline.benchmarking.model_files import resolve_model_dir
from benchmark_pipeline.benchmarking.report import plot_latency
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.demo.dataset import write_dataset
from benchmark_pipeline.selection import retrieve_best_trials, retrieve_from_disk
from benchmark_pipeline.selection.shapes import iter_trial_infos
from benchmark_pipeline.tracking import search_all_runs
from benchmark_pipeline_tests.builders import complete_result
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.ports import free_port

ITERATIONS = 3
NO_GPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the CPU fallback of device 'cuda'; this machine has a GPU"
)


# -------------------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Trained:
    """Real sweeps (read-only for the tests) and what retrieval found in them."""

    config: PipelineConfig
    client: MlflowClient
    test_data: Path

    @property
    def hpo_dir(self) -> Path:
        return self.config.hpo_output_dir

    @property
    def data_config(self) -> dict[str, Any]:
        return self.config.data_config

    @property
    def benchmark_config(self) -> dict[str, Any]:
        return self.config.benchmark_config

    def retrieve(
        self, scope: str = "overall", client: MlflowClient | None = None, *, use_mlflow: bool = True
    ) -> dict[str, Any]:
        cfg = self.config
        return retrieve_best_trials(
            list(cfg.backbones),
            {b: {"name": cfg.mlflow.hpo_experiment_name(b)} for b in cfg.backbones},
            cfg.benchmark_experiment(),
            {"hpo_output_dir": str(cfg.hpo_output_dir)},
            cfg.hpo_config,
            cfg.data_config,
            cfg.root_dir,
            cfg.environment,
            selection_scope=scope,
            mlflow_client=(client or self.client) if use_mlflow else None,
        )


@pytest.fixture(scope="module")
def trained(demo_sweeps: DemoSweeps) -> Trained:
    """The session's demo sweeps (read-only), an MLflow client and the test split of their dataset."""
    config = demo_sweeps.config
    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    test_data = write_dataset(config.data_config, config.root_dir).test
    return Trained(config=config, client=client, test_data=test_data)


@pytest.fixture(scope="module")
def best_overall(trained: Trained) -> dict[str, Any]:
    return trained.retrieve("overall")


@pytest.fixture(scope="module")
def best_per_variant(trained: Trained) -> dict[str, Any]:
    return trained.retrieve("per_variant")


def unique_experiment() -> dict[str, str]:
    return {"name": f"benchmarks-test-{uuid.uuid4().hex[:10]}"}


def bench_config(trained: Trained, **overrides: Any) -> dict[str, Any]:
    return {**trained.benchmark_config, **overrides}


def benchmark(
    trained: Trained,
    trials: dict[str, Any],
    root: Path,
    experiment: dict[str, str],
    client: MlflowClient | None,
    **config: Any,
) -> dict[str, Any]:
    return benchmark_best_trials(
        trials,
        trained.test_data,
        root,
        trained.config.environment,
        trained.data_config,
        trained.config.hpo_config,
        bench_config(trained, **config),
        experiment,
        client,
        hpo_output_dir=trained.hpo_dir,
        progress=lambda _message: None,
    )


def filter_missing(
    trained: Trained,
    trials: dict[str, Any],
    root: Path,
    experiment: dict[str, str],
    client: MlflowClient | None,
    **config: Any,
) -> dict[str, Any]:
    return filter_missing_benchmarks(
        trials,
        experiment,
        bench_config(trained, **config),
        trained.data_config,
        root,
        trained.config.environment,
        client,
    )


def runs_of(client: MlflowClient, experiment: dict[str, str]) -> list[Any]:
    found = client.get_experiment_by_name(experiment["name"])
    return [] if found is None else search_all_runs(client, [found.experiment_id], run_view_type=ViewType.ALL)


def model_copy(trained: Trained, info: dict[str, Any], destination: Path) -> Path:
    """A private copy of a trial's model folder (model.onnx, model.pt, trial_meta.json) to break."""
    return Path(shutil.copytree(info["trial_dir"], destination))


def one_trial(best: dict[str, Any], backbone: str = "bilstm") -> dict[str, Any]:
    return {backbone: best[backbone]}


# ----------------------------------------------------------------------- the key is the same from any source


def test_key_is_the_same_whichever_source_retrieved_the_trial(
    trained: Trained, best_overall: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    without_mlflow = trained.retrieve("overall", use_mlflow=False)
    assert set(without_mlflow) == set(best_overall) == set(trained.config.backbones)
    for backbone, from_mlflow in best_overall.items():
        from_study = without_mlflow[backbone]
        assert from_mlflow["source"] == "mlflow"
        assert from_study["source"] == "study"  # MLflow was not asked at all
        assert from_study["trial_id"] == from_mlflow["trial_id"]
        assert from_study["run_id"] == from_mlflow["run_id"] and from_study["run_id"]
        key = key_for_trial(from_mlflow, trained.data_config, trained.benchmark_config)
        assert key_for_trial(from_study, trained.data_config, trained.benchmark_config) == key
        # The trial folders alone (the lowest-priority source) name the same benchmark too.
        pick = retrieve_from_disk(backbone, trained.hpo_dir, trained.config.hpo_config, trained.data_config).best(
            "maximize"
        )
        assert pick is not None
        assert (
            build_benchmark_key(
                pick.backbone, pick.variant, pick.run_id, pick.trial_id, trained.data_config, trained.benchmark_config
            )
            == key
        )


def test_per_variant_keys_are_the_same_without_mlflow(
    trained: Trained, best_per_variant: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    without_mlflow = trained.retrieve("per_variant", use_mlflow=False)
    keys_mlflow = [
        key_for_trial(i, trained.data_config, trained.benchmark_config) for i in iter_trial_infos(best_per_variant)
    ]
    keys_study = [
        key_for_trial(i, trained.data_config, trained.benchmark_config) for i in iter_trial_infos(without_mlflow)
    ]
    assert len(keys_mlflow) == 4 and len(set(keys_mlflow)) == 4
    assert keys_study == keys_mlflow


# ----------------------------------------------------------------------------------- existence in MLflow


@pytest.fixture
def experiment(mlflow_client: MlflowClient) -> tuple[dict[str, str], str]:
    reference = unique_experiment()
    return reference, mlflow_client.create_experiment(reference["name"])


def sample_key(trial: str = "t1", **config: Any) -> str:
    data = {
        "name": "n",
        "version": "1",
        "seed": 1,
        "vocab_size": 64,
        "max_length": 12,
        "train_size": 8,
        "validation_size": 8,
        "test_size": 8,
    }
    bench = {"backends": ["onnxruntime"], "batch_sizes": [1], "max_length": 12, "warmup": 0, "iterations": 1, **config}
    return build_benchmark_key("bilstm", "v1", "r" * 32, trial, data, bench)


def tagged_run(
    client: MlflowClient, experiment_id: str, key: str | None, status: str | None, *, result_logged: bool = True
) -> str:
    """A run tagged with ``key``; a FINISHED one is marked as holding its benchmark.json, as this project's are."""
    tags = {BENCHMARK_KEY_TAG: key} if key else {}
    if status == "FINISHED" and result_logged:
        tags[RESULT_LOGGED_TAG] = "true"
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    if status is not None:
        client.set_terminated(run_id, status)
    return run_id


def test_a_finished_run_without_benchmark_json_does_not_count(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    # A cleanup script set a RUNNING benchmark run FINISHED: it holds no result, so the key is not benchmarked.
    reference, experiment_id = experiment
    key = sample_key("closed-by-cleanup")
    tagged_run(mlflow_client, experiment_id, key, "FINISHED", result_logged=False)
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is False
    assert key not in fetch_benchmark_runs(mlflow_client, reference).finished_keys()
    # A run logged before the tag existed counts when its artifacts hold benchmark.json (one listing request).
    legacy = tagged_run(mlflow_client, experiment_id, sample_key("legacy"), None)
    (tmp_path / "benchmark.json").write_text("{}", encoding="utf-8")
    mlflow_client.log_artifact(legacy, str(tmp_path / "benchmark.json"))
    mlflow_client.set_terminated(legacy, "FINISHED")
    assert benchmark_exists_in_mlflow(sample_key("legacy"), reference, mlflow_client) is True


def test_finished_run_means_the_benchmark_exists(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    key = sample_key("finished")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is False
    tagged_run(mlflow_client, experiment_id, key, "FINISHED")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is True
    assert benchmark_exists_in_mlflow(key, {"id": experiment_id}, mlflow_client) is True
    assert benchmark_exists_in_mlflow(sample_key("other"), reference, mlflow_client) is False


def test_failed_killed_and_running_runs_do_not_count(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    key = sample_key("unfinished")
    tagged_run(mlflow_client, experiment_id, key, "FAILED")
    tagged_run(mlflow_client, experiment_id, key, "KILLED")
    tagged_run(mlflow_client, experiment_id, key, None)  # stays RUNNING
    assert {r.info.status for r in runs_of(mlflow_client, reference)} == {"FAILED", "KILLED", "RUNNING"}
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is False


def test_a_deleted_finished_run_does_not_count(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    key = sample_key("deleted")
    run_id = tagged_run(mlflow_client, experiment_id, key, "FINISHED")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is True
    mlflow_client.delete_run(run_id)
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is False


def test_a_failed_run_listed_first_does_not_hide_a_finished_one(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    key = sample_key("retried")
    tagged_run(mlflow_client, experiment_id, key, "FINISHED")
    time.sleep(0.01)
    for _ in range(3):  # newer FAILED runs come first in MLflow's default order (start time, newest first)
        tagged_run(mlflow_client, experiment_id, key, "FAILED")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is True


def test_a_failed_run_created_before_a_finished_one(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    key = sample_key("failed-then-finished")
    tagged_run(mlflow_client, experiment_id, key, "FAILED")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is False
    tagged_run(mlflow_client, experiment_id, key, "FINISHED")
    assert benchmark_exists_in_mlflow(key, reference, mlflow_client) is True


def test_missing_experiment_means_no_benchmark(mlflow_client: MlflowClient) -> None:
    assert benchmark_exists_in_mlflow(sample_key(), unique_experiment(), mlflow_client) is False
    assert fetch_benchmark_runs(mlflow_client, unique_experiment()) == {}


def test_an_unsafe_key_is_refused_before_reaching_the_filter(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, _ = experiment
    with pytest.raises(ValueError):
        benchmark_exists_in_mlflow("a:b:c:d:e:f' or tags.x = 'y", reference, mlflow_client)


# ------------------------------------------------------------------------------------- existence on disk


def test_valid_cache_file_is_found(tmp_path: Path) -> None:
    key = sample_key("cached")
    assert benchmark_exists_on_disk(key, tmp_path, "test") is None
    written = write_cache_entry(cache_dir(tmp_path, "test"), key, complete_result(key), None, mlflow_logged=False)
    assert benchmark_exists_on_disk(key, tmp_path, "test") == written == cache_path(cache_dir(tmp_path, "test"), key)
    assert benchmark_exists_on_disk(key, tmp_path, "prod") is None  # environments have separate caches


@pytest.mark.parametrize(
    "content", ["{not json", "", '{"benchmark_key": ', "\udcff"], ids=["garbage", "empty", "truncated", "bad-utf8"]
)
def test_corrupt_cache_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    key = sample_key("corrupt")
    path = cache_path(cache_dir(tmp_path, "test"), key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="benchmark_pipeline.benchmarking"):
        assert benchmark_exists_on_disk(key, tmp_path, "test") is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and str(path) in warnings[0].getMessage()


def test_cache_file_holding_another_key_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, other = sample_key("mine"), sample_key("theirs")
    directory = cache_dir(tmp_path, "test")
    written = write_cache_entry(directory, other, complete_result(other), None, mlflow_logged=False)
    shutil.copyfile(written, cache_path(directory, key))
    with caplog.at_level(logging.WARNING, logger="benchmark_pipeline.benchmarking"):
        assert benchmark_exists_on_disk(key, tmp_path, "test") is None
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(cache_path(directory, key)) in message and other in message
    assert benchmark_exists_on_disk(other, tmp_path, "test") == written


@pytest.mark.parametrize("shape", ["list", "no-result", "string"])
def test_cache_file_of_the_wrong_shape_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: str) -> None:
    key = sample_key("shape")
    payload = {"list": [key, {"p50_ms": 1.0}], "no-result": {"benchmark_key": key, "mlflow": {}}, "string": key}[shape]
    path = cache_path(cache_dir(tmp_path, "test"), key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="benchmark_pipeline.benchmarking"):
        assert benchmark_exists_on_disk(key, tmp_path, "test") is None
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_benchmark_already_exists_combines_mlflow_and_disk(
    tmp_path: Path, mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    in_mlflow, on_disk, nowhere, failed = (sample_key(t) for t in ("in-mlflow", "on-disk", "nowhere", "failed"))
    tagged_run(mlflow_client, experiment_id, in_mlflow, "FINISHED")
    tagged_run(mlflow_client, experiment_id, failed, "FAILED")
    write_cache_entry(cache_dir(tmp_path, "test"), on_disk, complete_result(on_disk), None, mlflow_logged=False)

    def exists(key: str, client: MlflowClient | None) -> bool:
        return benchmark_already_exists(key, reference, tmp_path, "test", client)

    assert exists(in_mlflow, mlflow_client) is True
    assert exists(on_disk, mlflow_client) is True
    assert exists(nowhere, mlflow_client) is False
    assert exists(failed, mlflow_client) is False
    # Without a client only the disk cache is asked.
    assert exists(in_mlflow, None) is False
    assert exists(on_disk, None) is True


# ----------------------------------------------------------------------------------- paginated searches


def test_search_all_runs_follows_every_page(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    _, experiment_id = experiment
    created = {tagged_run(mlflow_client, experiment_id, sample_key(f"page{i}"), "FINISHED") for i in range(5)}
    first_page = mlflow_client.search_runs([experiment_id], max_results=2)
    assert len(first_page) == 2 and first_page.token  # one call alone would miss runs
    found = search_all_runs(mlflow_client, [experiment_id], page_size=2)
    assert len([r.info.run_id for r in found]) == 5
    assert {r.info.run_id for r in found} == created
    filtered = search_all_runs(
        mlflow_client, [experiment_id], f"tags.{BENCHMARK_KEY_TAG} = '{sample_key('page3')}'", page_size=2
    )
    assert [r.data.tags[BENCHMARK_KEY_TAG] for r in filtered] == [sample_key("page3")]


def test_fetch_benchmark_runs_groups_runs_by_key(
    mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str]
) -> None:
    reference, experiment_id = experiment
    retried, running, deleted = sample_key("retried"), sample_key("running"), sample_key("deleted")
    failed_id = tagged_run(mlflow_client, experiment_id, retried, "FAILED")
    finished_id = tagged_run(mlflow_client, experiment_id, retried, "FINISHED")
    running_id = tagged_run(mlflow_client, experiment_id, running, None)
    mlflow_client.delete_run(tagged_run(mlflow_client, experiment_id, deleted, "FINISHED"))
    tagged_run(mlflow_client, experiment_id, None, "FINISHED")  # not a benchmark run: no key tag

    grouped = fetch_benchmark_runs(mlflow_client, reference)
    assert set(grouped) == {retried, running}
    assert {(r.run_id, r.status) for r in grouped[retried]} == {(failed_id, "FAILED"), (finished_id, "FINISHED")}
    assert [(r.run_id, r.status) for r in grouped[running]] == [(running_id, "RUNNING")]
    assert all(isinstance(r.start_time, int) and r.start_time > 0 for runs in grouped.values() for r in runs)
    assert grouped.finished_keys() == {retried}


# ------------------------------------------------------------------------------ filter_missing_benchmarks


def synthetic_info(backbone: str, variant: str, trial: str) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "variant": variant,
        "trial_id": trial,
        "run_id": f"run-{trial}",
        "metric": 0.5,
        "source": "disk",
    }


@pytest.fixture
def filter_setup(
    tmp_path: Path, mlflow_client: MlflowClient, experiment: tuple[dict[str, str], str], trained: Trained
) -> Iterator[dict[str, Any]]:
    """Trial infos whose benchmarks are: FINISHED in MLflow, in the disk cache, FAILED in MLflow, or nowhere."""
    reference, experiment_id = experiment
    infos = {
        "mlflow": synthetic_info("tiny_transformer", "v1", "a1"),
        "disk": synthetic_info("tiny_transformer", "v2", "a2"),
        "failed": synthetic_info("bilstm", "v1", "b1"),
        "missing": synthetic_info("bilstm", "v2", "b2"),
    }
    keys = {name: key_for_trial(info, trained.data_config, trained.benchmark_config) for name, info in infos.items()}
    tagged_run(mlflow_client, experiment_id, keys["mlflow"], "FINISHED")
    tagged_run(mlflow_client, experiment_id, keys["failed"], "FAILED")
    write_cache_entry(
        cache_dir(tmp_path, trained.config.environment),
        keys["disk"],
        complete_result(keys["disk"]),
        None,
        mlflow_logged=False,
    )
    yield {"root": tmp_path, "experiment": reference, "infos": infos, "keys": keys}


def test_filter_overall_shape_keeps_only_missing(
    trained: Trained, mlflow_client: MlflowClient, filter_setup: dict[str, Any]
) -> None:
    infos = filter_setup["infos"]
    best = {
        "mlflow_bb": infos["mlflow"],
        "disk_bb": infos["disk"],
        "failed_bb": infos["failed"],
        "missing_bb": infos["missing"],
    }
    remaining = filter_missing(trained, best, filter_setup["root"], filter_setup["experiment"], mlflow_client)
    assert remaining == {"failed_bb": infos["failed"], "missing_bb": infos["missing"]}
    assert list(remaining) == ["failed_bb", "missing_bb"]


def test_filter_per_variant_shape_keeps_only_missing(
    trained: Trained, mlflow_client: MlflowClient, filter_setup: dict[str, Any]
) -> None:
    infos = filter_setup["infos"]
    best = {
        "tiny_transformer": {"v1": infos["mlflow"], "v2": infos["disk"]},
        "bilstm": {"v1": infos["failed"], "v2": infos["missing"]},
    }
    remaining = filter_missing(trained, best, filter_setup["root"], filter_setup["experiment"], mlflow_client)
    # tiny_transformer has nothing left, so it disappears; bilstm keeps the per-variant shape.
    assert remaining == {"bilstm": {"v1": infos["failed"], "v2": infos["missing"]}}


def test_filter_with_an_unreachable_mlflow_uses_the_disk_cache_quickly(
    trained: Trained, filter_setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    infos = filter_setup["infos"]
    dead = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    best = {
        "tiny_transformer": {"v1": infos["mlflow"], "v2": infos["disk"]},
        "bilstm": {"v1": infos["failed"], "v2": infos["missing"]},
    }
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="benchmark_pipeline.benchmarking"):
        remaining = filter_missing(trained, best, filter_setup["root"], filter_setup["experiment"], dead)
    assert time.monotonic() - started < 5.0
    # Only the disk cache could answer: the MLflow-only benchmark counts as missing.
    assert remaining == {
        "tiny_transformer": {"v1": infos["mlflow"]},
        "bilstm": {"v1": infos["failed"], "v2": infos["missing"]},
    }
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_filter_without_client_reads_mlflow_tracking_uri(
    trained: Trained, mlflow_server: str, filter_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    infos = filter_setup["infos"]
    best = {"a": infos["mlflow"], "b": infos["disk"], "c": infos["missing"]}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert filter_missing(trained, best, filter_setup["root"], filter_setup["experiment"], None) == {
        "a": infos["mlflow"],
        "c": infos["missing"],
    }
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert filter_missing(trained, best, filter_setup["root"], filter_setup["experiment"], None) == {
        "c": infos["missing"]
    }


def test_filter_depends_on_the_benchmark_config(
    trained: Trained, mlflow_client: MlflowClient, filter_setup: dict[str, Any]
) -> None:
    infos = filter_setup["infos"]
    best = {"a": infos["mlflow"], "b": infos["disk"]}
    # Another config is another benchmark: neither existing result counts for it.
    assert (
        filter_missing(
            trained, best, filter_setup["root"], filter_setup["experiment"], mlflow_client, iterations=ITERATIONS + 1
        )
        == best
    )


def test_filter_rejects_an_invalid_benchmark_config(trained: Trained, filter_setup: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="iterations"):
        filter_missing(trained, {}, filter_setup["root"], filter_setup["experiment"], None, iterations=0)


# ------------------------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class FirstPass:
    root: Path
    experiment: dict[str, str]
    best: dict[str, Any]
    todo: dict[str, Any]
    results: dict[str, Any]
    runs_before: int


@pytest.fixture(scope="module")
def first_pass(trained: Trained, best_overall: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> FirstPass:
    root = tmp_path_factory.mktemp("benchmark_root")
    reference = unique_experiment()
    runs_before = len(runs_of(trained.client, reference))
    todo = filter_missing(trained, best_overall, root, reference, trained.client)
    results = benchmark(trained, todo, root, reference, trained.client)
    return FirstPass(root, reference, best_overall, todo, results, runs_before)


def test_first_pass_benchmarks_every_trial(trained: Trained, first_pass: FirstPass) -> None:
    assert first_pass.runs_before == 0
    assert first_pass.todo == first_pass.best  # nothing existed yet
    assert set(first_pass.results) == set(trained.config.backbones)
    runs = runs_of(trained.client, first_pass.experiment)
    assert len(runs) == len(trained.config.backbones)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_mlflow_benchmark_run_is_complete(trained: Trained, first_pass: FirstPass, tmp_path: Path) -> None:
    client = trained.client
    for backbone, result in first_pass.results.items():
        info = first_pass.best[backbone]
        key = key_for_trial(info, trained.data_config, trained.benchmark_config)
        assert result["benchmark_key"] == key and result["status"] == "benchmarked" and result["mlflow_logged"] is True
        run = client.get_run(result["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.info.experiment_id == client.get_experiment_by_name(first_pass.experiment["name"]).experiment_id
        tags = run.data.tags
        assert tags[BENCHMARK_KEY_TAG] == key
        assert tags["code.backbone"] == backbone
        assert tags["code.variant"] == info["variant"]
        assert tags["code.trial_key_hash"] == info["trial_id"]
        assert tags["code.hpo_run_id"] == info["run_id"]
        params = run.data.params
        assert params["batch_sizes"] == "1,4" and params["iterations"] == str(ITERATIONS) and params["device"] == "cpu"
        assert params["backends"] == "onnxruntime,pytorch"
        metrics = run.data.metrics
        for backend in ("onnxruntime", "pytorch"):
            for size in (1, 4):
                assert metrics[f"{backend}.bs{size}.p50_ms"] > 0
                assert metrics[f"{backend}.bs{size}.throughput_samples_per_s"] > 0
        assert metrics["quality.prediction_agreement"] >= 0.99
        artifacts = {a.path: a for a in client.list_artifacts(run.info.run_id)}
        assert {"benchmark.json", "latency_vs_batch_size.png"} <= set(artifacts)
        assert artifacts["latency_vs_batch_size.png"].file_size > 1000
        downloaded = Path(client.download_artifacts(run.info.run_id, "benchmark.json", str(tmp_path)))
        stored = json.loads(downloaded.read_text(encoding="utf-8"))
        assert stored["benchmark_key"] == key
        assert stored["measurements"] == result["measurements"]


def test_disk_cache_entry_is_written_and_marked_logged(trained: Trained, first_pass: FirstPass) -> None:
    for result in first_pass.results.values():
        path = Path(result["cache_path"])
        assert path == cache_path(cache_dir(first_pass.root, trained.config.environment), result["benchmark_key"])
        payload = json.loads(path.read_text(encoding="utf-8"))
        assert payload["benchmark_key"] == result["benchmark_key"]
        assert payload["mlflow"] == {"run_id": result["mlflow_run_id"], "logged": True}
        assert payload["result"]["measurements"] == result["measurements"]
        assert benchmark_exists_on_disk(result["benchmark_key"], first_pass.root, trained.config.environment) == path
    leftovers = [
        p.name
        for p in cache_dir(first_pass.root, trained.config.environment).iterdir()
        if not p.name.startswith("benchmark_")
    ]
    assert leftovers == []  # no temporary files


def test_result_statistics_are_sound(trained: Trained, first_pass: FirstPass) -> None:
    for backbone, result in first_pass.results.items():
        assert result["backbone"] == backbone and result["trial_id"] == first_pass.best[backbone]["trial_id"]
        measurements = result["measurements"]
        assert sorted((m["backend"], m["batch_size"]) for m in measurements) == [
            ("onnxruntime", 1), ("onnxruntime", 4), ("pytorch", 1), ("pytorch", 4)
        ]  # fmt: skip
        for m in measurements:
            assert m["count"] >= ITERATIONS
            assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"]
            assert m["throughput_samples_per_s"] > 0
            assert m["provider"] == (CPU_PROVIDER if m["backend"] == "onnxruntime" else "torch:cpu")
        quality = result["quality"]
        assert quality["prediction_agreement"] >= 0.99
        assert quality["max_abs_output_diff"] < 1e-3
        assert 0.0 <= quality["test_macro_f1"] <= 1.0
        assert quality["test_examples"] == trained.data_config["test_size"]
        assert result["providers_used"] == {"onnxruntime": CPU_PROVIDER, "pytorch": "torch:cpu"}
        assert result["environment"]["onnxruntime_providers_used"] == [CPU_PROVIDER]
        assert result["environment"]["onnxruntime_providers_requested"] == [CPU_PROVIDER]
        assert result["environment"]["threads"]["intra_op_threads_config"] == 1


def test_second_pass_benchmarks_nothing(trained: Trained, first_pass: FirstPass) -> None:
    runs_before = len(runs_of(trained.client, first_pass.experiment))
    todo = filter_missing(trained, first_pass.best, first_pass.root, first_pass.experiment, trained.client)
    assert todo == {}
    assert benchmark(trained, todo, first_pass.root, first_pass.experiment, trained.client) == {}
    assert len(runs_of(trained.client, first_pass.experiment)) == runs_before


def test_second_pass_is_skipped_by_mlflow_alone_and_by_the_cache_alone(
    trained: Trained, first_pass: FirstPass, tmp_path: Path
) -> None:
    # A fresh root has no cache: the FINISHED MLflow runs alone make the trials already benchmarked.
    assert filter_missing(trained, first_pass.best, tmp_path, first_pass.experiment, trained.client) == {}
    # MLflow down: the cache alone does.
    dead = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert filter_missing(trained, first_pass.best, first_pass.root, first_pass.experiment, dead) == {}
    # Neither: everything is missing again.
    assert filter_missing(trained, first_pass.best, tmp_path, first_pass.experiment, dead) == first_pass.best


def test_per_variant_filter_after_an_overall_pass(
    trained: Trained, first_pass: FirstPass, best_per_variant: dict[str, Any]
) -> None:
    # The overall best of a backbone is also the best of its variant: same key, so only the other variant is left.
    remaining = filter_missing(trained, best_per_variant, first_pass.root, first_pass.experiment, trained.client)
    assert set(remaining) == set(trained.config.backbones)
    for backbone, per_variant in remaining.items():
        done_variant = first_pass.best[backbone]["variant"]
        assert set(per_variant) == set(trained.config.variants) - {done_variant}
        for variant, info in per_variant.items():
            assert info == best_per_variant[backbone][variant]


def test_benchmark_table_lists_every_measurement(first_pass: FirstPass) -> None:
    table = format_benchmark_table(first_pass.results)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["Backbone", "Variant", "Batch"]
    body = lines[2:]
    assert len(body) == len(first_pass.results) * 4
    for backbone in first_pass.results:
        assert sum(line.startswith(backbone) for line in body) == 4
    assert sum(CPU_PROVIDER in line for line in body) == len(first_pass.results) * 2


def test_latency_plot_of_a_real_result(first_pass: FirstPass, tmp_path: Path) -> None:
    result = next(iter(first_pass.results.values()))
    path = plot_latency(result, tmp_path / "nested" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# ------------------------------------------------------------------------------------------------ devices


@pytest.fixture(scope="module")
def model_dir(best_overall: dict[str, Any]) -> Path:
    return Path(best_overall["bilstm"]["trial_dir"])


@NO_GPU
def test_cuda_on_a_cpu_machine_raises_provider_mismatch(model_dir: Path) -> None:
    import onnxruntime as ort

    assert CUDA_PROVIDER in ort.get_available_providers()  # onnxruntime-gpu lists it although it cannot run it
    with pytest.raises(
        ProviderMismatchError, match=r"(?s)device 'cuda' was requested.*model\.onnx.*CPUExecutionProvider"
    ):
        open_onnx_session(model_dir / "model.onnx", "cuda", 1)


@NO_GPU
def test_auto_on_a_cpu_machine_reports_the_cpu_provider(model_dir: Path) -> None:
    backend = open_onnx_session(model_dir / "model.onnx", "auto", 1)
    assert backend.provider_used == CPU_PROVIDER
    assert backend.session.get_providers() == [CPU_PROVIDER]
    assert backend.providers_requested == (CUDA_PROVIDER, CPU_PROVIDER)
    logits = backend.run(
        {"input_ids": np.ones((2, 12), dtype=np.int64), "attention_mask": np.ones((2, 12), dtype=np.int64)}
    )
    assert logits.shape[:2] == (2, 12) and np.isfinite(logits).all()


def test_cpu_requests_only_the_cpu_provider(model_dir: Path) -> None:
    backend = open_onnx_session(model_dir / "model.onnx", "cpu", 1)
    assert backend.providers_requested == (CPU_PROVIDER,) and backend.session.get_providers() == [CPU_PROVIDER]


@NO_GPU
def test_run_benchmark_on_auto_records_the_provider_used(
    trained: Trained, best_overall: dict[str, Any], model_dir: Path
) -> None:
    info = best_overall["bilstm"]
    config = bench_config(trained, device="auto", backends=["onnxruntime"], batch_sizes=[2])
    result = run_benchmark("k", info, model_dir, trained.test_data, trained.data_config, config)
    assert [(m["backend"], m["batch_size"], m["provider"]) for m in result.measurements] == [
        ("onnxruntime", 2, CPU_PROVIDER)
    ]
    assert result.providers_used == {"onnxruntime": CPU_PROVIDER}
    assert result.environment["onnxruntime_providers_requested"] == [CUDA_PROVIDER, CPU_PROVIDER]
    assert result.environment["onnxruntime_providers_used"] == [CPU_PROVIDER]


@NO_GPU
def test_cuda_through_the_orchestrator_fails_the_run_and_caches_nothing(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    reference = unique_experiment()
    trials = one_trial(best_overall)
    key = key_for_trial(trials["bilstm"], trained.data_config, bench_config(trained, device="cuda"))
    with pytest.raises(BenchmarkFailedError) as raised:
        benchmark(trained, trials, tmp_path, reference, trained.client, device="cuda")
    assert list(raised.value.failures) == [key]
    assert "ProviderMismatchError" in raised.value.failures[key] and key in str(raised.value)
    runs = runs_of(trained.client, reference)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags[BENCHMARK_KEY_TAG] == key
    assert "ProviderMismatchError" in runs[0].data.tags["error"]
    assert not cache_path(cache_dir(tmp_path, trained.config.environment), key).exists()
    # The failure leaves the benchmark missing, so a rerun would try again.
    assert filter_missing(trained, trials, tmp_path, reference, trained.client, device="cuda") == trials


def test_one_failure_does_not_stop_the_other_benchmarks(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    reference = unique_experiment()
    broken = {**best_overall["tiny_transformer"], "trial_dir": None, "run_id": None}
    trials = {"tiny_transformer": broken, "bilstm": best_overall["bilstm"]}
    with pytest.raises(BenchmarkFailedError) as raised:
        benchmark(trained, trials, tmp_path, reference, trained.client)
    [failed_key] = raised.value.failures
    assert failed_key.startswith("tiny_transformer:") and "ModelFileError" in raised.value.failures[failed_key]
    good_key = key_for_trial(best_overall["bilstm"], trained.data_config, trained.benchmark_config)
    assert benchmark_exists_on_disk(good_key, tmp_path, trained.config.environment) is not None
    assert sorted(r.info.status for r in runs_of(trained.client, reference)) == ["FAILED", "FINISHED"]


def test_unreachable_mlflow_benchmarks_to_the_cache_only(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    dead = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    results = benchmark(
        trained, one_trial(best_overall), tmp_path, unique_experiment(), dead, backends=["onnxruntime"], batch_sizes=[1]
    )
    assert time.monotonic() - started < 30
    result = results["bilstm"]
    assert result["mlflow_run_id"] is None and result["mlflow_logged"] is False
    payload = json.loads(Path(result["cache_path"]).read_text(encoding="utf-8"))
    assert payload["mlflow"] == {"run_id": None, "logged": False}


# --------------------------------------------------------------------------------------------- bad inputs


def run_on(trained: Trained, info: dict[str, Any], folder: Path, test_data: Path | None = None, **config: Any) -> Any:
    settings = bench_config(trained, **{"backends": ["onnxruntime"], "batch_sizes": [1], **config})
    return run_benchmark("key", info, folder, test_data or trained.test_data, trained.data_config, settings)


def test_missing_onnx_model_names_the_path(trained: Trained, best_overall: dict[str, Any], tmp_path: Path) -> None:
    info = best_overall["bilstm"]
    folder = model_copy(trained, info, tmp_path / "model")
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match=re.escape(f"but {folder} has no model.onnx (for onnxruntime)")):
        run_on(trained, info, folder)


def test_missing_checkpoint_names_the_path(trained: Trained, best_overall: dict[str, Any], tmp_path: Path) -> None:
    info = best_overall["bilstm"]
    folder = model_copy(trained, info, tmp_path / "model")
    (folder / "model.pt").unlink()
    # The demo's PyTorch route is its model factory, which loads model.pt.
    with pytest.raises(ModelFileError, match=str(folder / "model.pt")):
        run_on(trained, info, folder, backends=["onnxruntime", "pytorch"])


def test_truncated_onnx_model_is_a_model_file_error(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    info = best_overall["bilstm"]
    folder = model_copy(trained, info, tmp_path / "model")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cannot load ONNX model .*model\.onnx"):
        run_on(trained, info, folder)


def test_onnx_model_whose_inputs_the_test_data_lacks_is_refused(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    info = best_overall["bilstm"]
    folder = model_copy(trained, info, tmp_path / "model")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["tokens"], ["logits"], to=TensorProto.FLOAT)],
        "wrong_inputs",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with pytest.raises(
        ValueError, match=r"has no input 'tokens'; the model takes \['tokens'\], the file has \['input_ids'\]"
    ):
        run_on(trained, info, folder)


def test_checkpoint_of_another_architecture_is_refused(
    trained: Trained, best_per_variant: dict[str, Any], tmp_path: Path
) -> None:
    # The variants' width choices are disjoint, so v2's checkpoint cannot fit the model built for v1.
    v1, v2 = best_per_variant["bilstm"]["v1"], best_per_variant["bilstm"]["v2"]
    assert v1["hyperparameters"]["width"] != v2["hyperparameters"]["width"]
    folder = model_copy(trained, v1, tmp_path / "model")
    shutil.copyfile(Path(v2["trial_dir"]) / "model.pt", folder / "model.pt")
    with pytest.raises(ModelFileError, match=r"cannot load PyTorch checkpoint .*model\.pt"):
        run_on(trained, v1, folder, backends=["onnxruntime", "pytorch"])


def test_onnx_and_checkpoint_that_disagree_are_refused(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    # Same architecture, different weights: the checkpoint's classifier is re-drawn, so predictions differ.
    info = best_overall["bilstm"]
    folder = model_copy(trained, info, tmp_path / "model")
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["classifier.weight"] = torch.randn(state["classifier.weight"].shape, generator=generator) * 10
    state["classifier.bias"] = torch.arange(state["classifier.bias"].shape[0], dtype=torch.float32).flip(0) * 10
    torch.save(state, folder / "model.pt")
    with pytest.raises(
        ModelFileError, match=r"ONNX and PyTorch outputs differ by up to .* they are not the same model"
    ):
        run_on(trained, info, folder, backends=["onnxruntime", "pytorch"])


def test_empty_test_data_file_names_the_file(trained: Trained, best_overall: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty_test.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=str(empty)):
        run_on(trained, best_overall["bilstm"], Path(best_overall["bilstm"]["trial_dir"]), test_data=empty)


def test_missing_test_data_file_names_the_file(trained: Trained, best_overall: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=str(tmp_path / "absent.jsonl")):
        run_on(
            trained,
            best_overall["bilstm"],
            Path(best_overall["bilstm"]["trial_dir"]),
            test_data=tmp_path / "absent.jsonl",
        )


def test_benchmark_max_length_beyond_the_data_max_length_is_refused(
    trained: Trained, best_overall: dict[str, Any]
) -> None:
    info = best_overall["bilstm"]
    with pytest.raises(ValueError, match=r"max_length \(13\) exceeds data_config\.max_length \(12\)"):
        run_on(trained, info, Path(info["trial_dir"]), max_length=13)


def test_shorter_benchmark_max_length_is_accepted(trained: Trained, best_overall: dict[str, Any]) -> None:
    info = best_overall["tiny_transformer"]
    result = run_on(trained, info, Path(info["trial_dir"]), max_length=8, backends=["onnxruntime", "pytorch"])
    assert result.quality["prediction_agreement"] >= 0.99 and result.measurements[0]["count"] >= ITERATIONS


def test_trial_dir_outside_the_allowed_roots_is_refused(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    info = best_overall["bilstm"]
    outside = model_copy(trained, info, tmp_path / "elsewhere" / "trial")
    allowed = [trained.hpo_dir.resolve()]
    with pytest.raises(ModelFileError, match="outside the configured HPO folders"):
        resolve_model_dir({**info, "trial_dir": str(outside)}, allowed, trained.client, tmp_path / "download")
    # '..' and symbolic links are resolved before the check.
    dotted = trained.hpo_dir / os.path.relpath(outside, trained.hpo_dir)  # "{hpo_dir}/../../…/elsewhere/trial"
    assert str(dotted).startswith(str(trained.hpo_dir)) and Path(dotted).resolve() == outside.resolve()
    with pytest.raises(ModelFileError, match="outside"):
        resolve_model_dir({**info, "trial_dir": str(dotted)}, allowed, trained.client, tmp_path / "download")
    inside_root = tmp_path / "allowed"
    inside_root.mkdir()
    (inside_root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelFileError, match="outside"):
        resolve_model_dir(
            {**info, "trial_dir": str(inside_root / "link")},
            [inside_root.resolve()],
            trained.client,
            tmp_path / "download",
        )
    assert resolve_model_dir(info, allowed, trained.client, tmp_path / "download") == Path(info["trial_dir"]).resolve()


def test_trial_dir_outside_the_roots_fails_through_the_orchestrator(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    info = best_overall["bilstm"]
    outside = model_copy(trained, info, tmp_path / "elsewhere")
    with pytest.raises(BenchmarkFailedError, match="outside the configured HPO folders"):
        benchmark(
            trained, {"bilstm": {**info, "trial_dir": str(outside)}}, tmp_path / "root", unique_experiment(), None
        )


def test_model_is_downloaded_from_mlflow_when_there_is_no_trial_dir(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    info = {**best_overall["tiny_transformer"], "trial_dir": None, "model_path": None}
    folder = resolve_model_dir(info, [trained.hpo_dir.resolve()], trained.client, tmp_path / "download")
    assert folder.is_relative_to(tmp_path / "download")
    local = Path(best_overall["tiny_transformer"]["trial_dir"])
    for name in ("model.onnx", "model.pt"):
        assert (folder / name).read_bytes() == (local / name).read_bytes()
    with pytest.raises(ModelFileError, match="no model for trial"):
        resolve_model_dir({**info, "run_id": None}, [trained.hpo_dir.resolve()], trained.client, tmp_path / "d2")
    with pytest.raises(ModelFileError, match="cannot download"):
        resolve_model_dir({**info, "run_id": "0" * 32}, [trained.hpo_dir.resolve()], trained.client, tmp_path / "d3")


def test_orchestrator_benchmarks_a_downloaded_model(
    trained: Trained, best_overall: dict[str, Any], tmp_path: Path
) -> None:
    info = {**best_overall["tiny_transformer"], "trial_dir": None, "model_path": None}
    results = benchmark(
        trained, {"tiny_transformer": info}, tmp_path, unique_experiment(), trained.client, batch_sizes=[1]
    )
    result = results["tiny_transformer"]
    # Both backends ran from the downloaded artifacts (the demo's factory reads the downloaded trial_meta.json).
    assert result["backends"] == {"onnxruntime": "ran", "pytorch": "ran"} and result["pytorch_route"] == "model_factory"
    assert result["quality"]["prediction_agreement"] >= 0.99 and result["mlflow_logged"] is True
    # The key does not depend on where the model came from.
    assert result["benchmark_key"] == key_for_trial(
        best_overall["tiny_transformer"], trained.data_config, bench_config(trained, batch_sizes=[1])
    )


# -------------------------------------------------------------------------------------------- measurement


def test_time_calls_runs_warmup_untimed_then_exactly_iterations() -> None:
    calls: list[float] = []

    def call() -> None:
        calls.append(time.perf_counter())
        if len(calls) <= 2:
            time.sleep(0.03)  # the two warm-up calls are slow and must not be timed

    samples = time_calls(call, warmup=2, iterations=5, min_duration_s=0.0)
    assert len(calls) == 7 and samples.shape == (5,)
    assert samples.dtype == np.float64 and (samples > 0).all()
    assert samples.max() < 0.03e9


def test_time_calls_keeps_measuring_for_min_duration() -> None:
    samples = time_calls(lambda: time.sleep(0.001), warmup=0, iterations=3, min_duration_s=0.05)
    assert samples.min() >= 1e6  # each call slept at least 1 ms
    assert samples.sum() >= 0.045e9  # it measured for (about) the whole 50 ms
    assert (
        15 <= len(samples) <= 51
    )  # ~45 expected (fewer on a loaded machine); at most 50 calls of >= 1 ms fit in 50 ms, +1


def test_time_calls_stops_at_the_iteration_cap() -> None:
    started = time.monotonic()
    samples = time_calls(lambda: None, warmup=0, iterations=1, min_duration_s=120.0)
    assert len(samples) == MAX_ITERATIONS
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("warmup", "iterations", "message"), [(0, 0, "iterations"), (1, -2, "iterations"), (-1, 3, "warmup")]
)
def test_time_calls_rejects_bad_counts(warmup: int, iterations: int, message: str) -> None:
    calls: list[int] = []
    with pytest.raises(ValueError, match=message):
        time_calls(lambda: calls.append(1), warmup=warmup, iterations=iterations, min_duration_s=0.0)
    assert calls == []


def test_summarize_known_samples() -> None:
    stats = summarize(np.array([4e6, 1e6, 3e6, 2e6]), batch_size=8)  # 1, 2, 3, 4 ms, unordered
    assert stats.count == 4
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.p90_ms == pytest.approx(3.7)
    assert stats.p95_ms == pytest.approx(3.85)
    assert stats.p99_ms == pytest.approx(3.97)
    assert stats.stdev_ms == pytest.approx((5 / 3) ** 0.5)  # sample standard deviation
    assert stats.cv == pytest.approx((5 / 3) ** 0.5 / 2.5)
    assert stats.throughput_samples_per_s == pytest.approx(8 / 0.0025)
    assert stats.peak_rss_mb > 10
    assert set(stats.to_dict()) >= {"count", "p50_ms", "p95_ms", "p99_ms", "throughput_samples_per_s"}


def test_summarize_a_single_sample() -> None:
    stats = summarize(np.array([5e5]), batch_size=1)
    assert (stats.count, stats.p50_ms, stats.p99_ms, stats.stdev_ms, stats.cv) == (1, 0.5, 0.5, 0.0, 0.0)
    assert stats.throughput_samples_per_s == pytest.approx(2000.0)


# ------------------------------------------------------------------------------------------------ reports


def fake_result(backbone: str, variant: str, scale: float = 1.0) -> dict[str, Any]:
    measurements = [
        {
            "backend": backend,
            "batch_size": size,
            "provider": provider,
            "p50_ms": scale * size,
            "p95_ms": scale * size * 1.5,
            "throughput_samples_per_s": 1000.0 / scale,
            "count": 30,
        }
        for backend, provider in (("onnxruntime", CPU_PROVIDER), ("pytorch", "torch:cpu"))
        for size in (1, 8, 32)
    ]
    return {
        "backbone": backbone,
        "variant": variant,
        "trial_id": f"{backbone}-{variant}",
        "benchmark_key": f"{backbone}:{variant}:k",
        "measurements": measurements,
    }


def test_format_benchmark_table_per_variant_shape_and_skipped_entries() -> None:
    results = {
        "bilstm": {"v2": fake_result("bilstm", "v2", 2.0), "v1": fake_result("bilstm", "v1")},
        "tiny_transformer": {
            "trial_id": "t",
            "backbone": "tiny_transformer",
            "variant": "v1",
            "status": "skipped",
            "benchmark_key": "tiny_transformer:v1:k",
        },
    }
    lines = format_benchmark_table(results).splitlines()
    assert len(lines) == 2 + 6 + 6 + 1
    body = lines[2:]
    assert [line.split()[1] for line in body[:12]] == ["v1"] * 6 + ["v2"] * 6  # variants in sorted order
    assert body[0].split()[:5] == ["bilstm", "v1", "1", "onnxruntime", CPU_PROVIDER]
    assert body[-1].split() == ["tiny_transformer", "v1", "skipped:", "tiny_transformer:v1:k"]
    assert "64.000" in body[11]  # p50 of v2 at batch 32 is 2 * 32 ms


def test_plot_latency_writes_a_png(tmp_path: Path) -> None:
    path = plot_latency(fake_result("bilstm", "v1"), tmp_path / "sub" / "latency.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000

"""Shared fixtures for the benchmark_pipeline test suite.

The suite uses real parts only: a real MLflow tracking server over HTTP on 127.0.0.1, real Optuna sqlite
storages, real trial folders and real (tiny) training. Nothing is mocked.

Fixtures here:

* ``mlflow_server`` (session): starts ``mlflow server`` on a free port, yields its tracking URI.
* ``mlflow_client``: an ``MlflowClient`` for that server.
* ``private_mlflow_server``: a server (:class:`MlflowServer`) a test may kill and restart.
* ``tiny_raw_config`` / ``make_config``: factories for a small pipeline config (raw dict / ``PipelineConfig``)
  whose MLflow experiment names are unique per call, so tests sharing the server never see each other's runs.
* ``demo_sweeps`` (session): real sweeps of 2 backbones x 2 variants x 3 trials in one root; READ-ONLY for the
  tests that use it (copy what you need to change).
* ``postgres_server`` (session): a real PostgreSQL server (:class:`~benchmark_pipeline_tests.postgres_server.PostgresServer`);
  each test creates its own database in it.
* ``dagster_setup``: a private copy of those sweeps, the code location's resources and a real Dagster instance.

Helpers (plain functions, importable as ``from benchmark_pipeline_tests.conftest import ...``):
``free_port``, ``deep_merge``, ``benchmark_runs``.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# MLflow's client prints a "View run ... at ..." line, fetching the run once more, every time a run is
# terminated; in tests that is only noise and an extra HTTP request per run. (A documented MLflow setting.)
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# The MLflow search fast path raises instead of falling back silently when MLflow's internals move (tracking.py).
os.environ.setdefault("BENCHMARK_PIPELINE_STRICT_MLFLOW_INTERNALS", "1")

from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import PipelineConfig, config_from_dict
from benchmark_pipeline_tests.postgres_server import PostgresServer, postgres_unavailable_reason

#: Seconds to wait for the MLflow server to answer ``GET /health`` (slow, loaded CI machines included).
MLFLOW_STARTUP_TIMEOUT_S = 90.0

TINY_BACKBONES = ("tiny_transformer", "bilstm")
TINY_VARIANTS = ("v1", "v2")


# --------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, recursively for mappings; an override of ``None`` removes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def unique_suffix() -> str:
    return uuid.uuid4().hex[:10]


def tiny_config_dict(root: Path | str, tracking_uri: str | None = None, suffix: str | None = None) -> dict[str, Any]:
    """A small, valid raw config: 2 backbones, 2 variants x 3 trials of 1 epoch, a 96/32/32 dataset.

    MLflow experiment names carry ``suffix`` (random by default) so each config gets its own experiments.
    """
    suffix = suffix or unique_suffix()
    return {
        "environment": "test",
        "root_dir": str(root),
        "backbones": list(TINY_BACKBONES),
        "mlflow": {
            "tracking_uri": tracking_uri,
            "hpo_experiment_prefix": f"hpo-{suffix}-",
            "benchmark_experiment": f"benchmarks-{suffix}",
        },
        "optuna": {"storages": []},
        "hpo_output_dir": None,
        "data_config": {
            "name": "synthetic-ner",
            "version": "1",
            "seed": 13,
            "vocab_size": 64,
            "max_length": 12,
            "train_size": 96,
            "validation_size": 32,
            "test_size": 32,
            "local_path": "outputs/data/synthetic-ner",
        },
        "hpo_config": {
            "objective": {"metric": "macro-f1", "direction": "maximize"},
            "seed": 7,
            "batch_size": 32,
            "variants": {
                "v1": {
                    "n_trials": 3,
                    "epochs": 1,
                    "search_space": {
                        "learning_rate": {"type": "float", "low": 0.003, "high": 0.03, "log": True},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.2},
                        "width": {"type": "categorical", "choices": [16, 32]},
                    },
                },
                "v2": {
                    "n_trials": 3,
                    "epochs": 1,
                    "search_space": {
                        "learning_rate": {"type": "float", "low": 0.01, "high": 0.05, "log": True},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.1},
                        "width": {"type": "categorical", "choices": [8, 24]},
                    },
                },
            },
        },
        "benchmark_config": {
            "backends": ["onnxruntime", "pytorch"],
            "test_data": "outputs/data/synthetic-ner/test.jsonl",
            "pytorch": {"model_factory": "benchmark_pipeline.demo.models:load_trial_model"},
            "device": "cpu",
            "batch_sizes": [1, 4],
            "max_length": 12,
            "warmup": 1,
            "iterations": 3,
            "min_duration_s": 0.0,
            "intra_op_threads": 1,
        },
    }


# ---------------------------------------------------------------------------------------- MLflow server


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"<cannot read {path}: {error}>"


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=15)


class MlflowServer:
    """A real ``mlflow server`` process (sqlite backend, or ``backend_store_uri``, and proxied artifacts under
    ``base``) on 127.0.0.1.

    ``start()`` waits for ``GET /health``; ``kill()`` SIGKILLs it (a real outage); ``start()`` again brings it
    back on the same port with the same store. The server's output goes to ``mlflow-server.log`` in ``base``.
    """

    def __init__(self, base: Path, port: int | None = None, backend_store_uri: str | None = None) -> None:
        self.base = base
        self.backend_store_uri = backend_store_uri or f"sqlite:///{base / 'mlflow.db'}"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        script = Path(sys.executable).parent / "mlflow"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]
        command += [
            "server",
            "--backend-store-uri", self.backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination", str(self.base / "artifacts"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = dict(os.environ)
        # The server's background job runner (GenAI scorers, periodic tasks) is not used by this project and
        # would cost several processes' CPU on small machines.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.base, env=env, start_new_session=True
            )
        deadline = time.monotonic() + MLFLOW_STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self.process.returncode} before answering /health "
                    f"({' '.join(command)}); log tail:\n{_log_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.uri
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mlflow server did not answer {self.uri}/health within {MLFLOW_STARTUP_TIMEOUT_S:.0f}s "
                    f"({' '.join(command)}); log tail:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the whole server (gunicorn/uvicorn workers included) and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            _stop_process_group(self.process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend, local artifact store) for the whole session.

    Yields its tracking URI ``http://127.0.0.1:<port>``; the server's process group is terminated at the end.
    The server's output goes to ``mlflow-server.log`` in its tmp dir; its tail is shown if startup fails.
    """
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def private_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server of the test's own, which the test may kill and restart (fault injection)."""
    server = MlflowServer(tmp_path_factory.mktemp("private_mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_client(mlflow_server: str) -> MlflowClient:
    """An explicit client for the session's MLflow server."""
    return MlflowClient(tracking_uri=mlflow_server)


# ---------------------------------------------------------------------------------------------- configs


@pytest.fixture
def tiny_raw_config() -> Callable[..., dict[str, Any]]:
    """``tiny_raw_config(root, tracking_uri=None, **overrides)`` → a raw config dict (no server needed).

    ``overrides`` are merged recursively (see :func:`deep_merge`; ``None`` removes a key).
    """

    def build(root: Path | str, tracking_uri: str | None = None, **overrides: Any) -> dict[str, Any]:
        return deep_merge(tiny_config_dict(root, tracking_uri), overrides)

    return build


@pytest.fixture
def make_config(mlflow_server: str) -> Callable[..., PipelineConfig]:
    """``make_config(root, **overrides)`` → a small ``PipelineConfig`` rooted at ``root``, tracking to the session
    server, with experiment names unique to this call. ``overrides`` are merged into the raw dict recursively;
    pass ``hpo_config={"variants": {"v2": None}}`` to drop a variant. The environment is ignored (``env={}``).
    """

    def build(root: Path | str, **overrides: Any) -> PipelineConfig:
        raw = deep_merge(tiny_config_dict(root, mlflow_server), overrides)
        return config_from_dict(raw, env={})

    return build


# ------------------------------------------------------------------------------------------ demo sweeps


@dataclass(frozen=True)
class DemoSweeps:
    """The result of :func:`demo_sweeps`: the config and one ``SweepSummary`` per (backbone, variant)."""

    config: PipelineConfig
    summaries: dict[tuple[str, str], Any]

    @property
    def hpo_dir(self) -> Path:
        return self.config.hpo_output_dir

    def private_config_file(self, root: Path) -> tuple[Path, dict[str, Any]]:
        """``root/pipeline.yaml`` (and its raw dict): a config reading a private copy of these sweeps' trial
        folders (the test may break files in it), these sweeps' MLflow HPO experiments and dataset, and a
        benchmark experiment of its own."""
        hpo_copy = root / "hpo"
        shutil.copytree(self.hpo_dir, hpo_copy)
        raw = tiny_config_dict(root, self.config.mlflow.tracking_uri, suffix=unique_suffix())
        raw["mlflow"]["hpo_experiment_prefix"] = self.config.mlflow.hpo_experiment_prefix
        raw["hpo_output_dir"] = str(hpo_copy)
        # The sweeps' own dataset, read (never written) by the benchmark.
        data_dir = self.config.root_dir / self.config.data_config["local_path"]
        raw["data_config"]["local_path"] = str(data_dir)
        raw["benchmark_config"]["test_data"] = str(data_dir / "test.jsonl")
        path = root / "pipeline.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path, raw


@pytest.fixture(scope="session")
def demo_sweeps(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> DemoSweeps:
    """Real sweeps: tiny_transformer and bilstm x v1 and v2 x 3 trials (1 epoch each) in one root.

    READ-ONLY: many tests read these MLflow experiments, studies and folders. Tests that change data must
    copy it (e.g. ``shutil.copytree(demo_sweeps.hpo_dir, ...)``) or build their own.
    """
    from benchmark_pipeline.demo.sweep import run_sweep

    root = tmp_path_factory.mktemp("demo_sweeps")
    config = config_from_dict(tiny_config_dict(root, mlflow_server, suffix=f"demo-{unique_suffix()}"), env={})
    client = MlflowClient(tracking_uri=mlflow_server)
    summaries = {
        (backbone, variant): run_sweep(config, backbone, variant, client=client, progress=lambda _message: None)
        for backbone in config.backbones
        for variant in config.variants
    }
    return DemoSweeps(config=config, summaries=summaries)


# ------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's ``postgresql``) on 127.0.0.1 for the whole session, stopped and
    removed at the end; tests take their own database with ``postgres_server.create_database()``.

    Skips, printing what to install, where PostgreSQL is missing (``make test`` installs it when run as root).
    """
    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"\nSKIPPING the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    server = PostgresServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ dagster


@pytest.fixture
def dagster_setup(demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A config file reading a private copy of the demo sweeps' folders (tests may break files in it),
    the demo's MLflow HPO experiments, and a benchmark experiment of its own; the code location's resources
    for it; a real sqlite-backed Dagster instance (temporary DAGSTER_HOME) with the demo's partitions
    registered, backbones in the order ``tiny_transformer``, ``bilstm`` and variants ``v1``, ``v2``.

    Yields ``{"config", "resources", "instance", "client"}``.
    """
    import dagster as dg

    from benchmark_pipeline.config import load_config
    from benchmark_pipeline.defs.io_managers import JsonIOManager, default_io_base_path
    from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY
    from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings

    path, _raw = demo_sweeps.private_config_file(tmp_path)
    resources = {
        "settings": PipelineSettings(config_path=str(path)),
        "mlflow": MlflowResource(tracking_uri=mlflow_server),
        "io_manager": JsonIOManager(base_path=default_io_base_path(load_config(path, env={}))),  # as default_resources
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("backbone", ["tiny_transformer", "bilstm"])
        instance.add_dynamic_partitions("variant", ["v1", "v2"])
        instance.add_dynamic_partitions(
            PAIRS_REGISTRY, ["bilstm|v1", "bilstm|v2", "tiny_transformer|v1", "tiny_transformer|v2"]
        )
        yield {
            "config": load_config(path, env={}),
            "resources": resources,
            "instance": instance,
            "client": MlflowClient(mlflow_server),
        }


def benchmark_runs(client: MlflowClient, experiment_name: str) -> list[Any]:
    """Every run (any status, deleted included) of the benchmark experiment."""
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(experiment_name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)

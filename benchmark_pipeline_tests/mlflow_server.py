"""A real ``mlflow server`` process for the tests (:class:`MlflowServer`), and the runs of an experiment on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from benchmark_pipeline_tests.ports import free_port

#: Seconds to wait for the MLflow server to answer ``GET /health`` (slow, loaded CI machines included).
MLFLOW_STARTUP_TIMEOUT_S = 90.0


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


def benchmark_runs(client: MlflowClient, experiment_name: str) -> list[Any]:
    """Every run (any status, deleted included) of the benchmark experiment."""
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(experiment_name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)

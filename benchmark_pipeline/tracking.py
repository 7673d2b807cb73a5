"""Talking to MLflow through an explicit ``MlflowClient``: never the fluent, process-global API.

* :func:`ensure_reachable` answers within ``timeout_s`` whether an HTTP tracking server is up. MLflow's own
  client retries a dead server with exponential back-off for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
  default 7); probing ``/health`` first turns an outage into a fast, clear :class:`MlflowUnavailableError`.
* :func:`search_all_runs` pages through ``search_runs`` until the server has nothing left: one call returns
  at most ``max_results`` runs and says nothing about the rest.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

#: Page size for paginated searches: the most one ``search_runs`` call returns by default.
SEARCH_PAGE_SIZE = 1000


class MlflowUnavailableError(RuntimeError):
    """The MLflow tracking server could not be reached (refused, timed out, or unhealthy)."""


def make_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ensure_reachable(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`MlflowUnavailableError` unless the server answers ``GET /health`` within ``timeout_s``.

    Local stores (``sqlite:``, ``file:``, plain paths) are always reachable.
    """
    if not is_remote(tracking_uri):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                raise MlflowUnavailableError(f"MLflow server {tracking_uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise MlflowUnavailableError(f"MLflow server {tracking_uri} is unreachable: {error}") from None


def client_tracking_uri(client: MlflowClient) -> str:
    return str(client._tracking_client.tracking_uri)  # noqa: SLF001 - the only public way is the constructor


def default_artifact_location(tracking_uri: str, root_dir: Path) -> str | None:
    """Artifact root for experiments this project creates: a folder under ``root_dir`` for local stores
    (MLflow would otherwise write ``./mlruns`` wherever the process happens to run), the server's for HTTP."""
    if is_remote(tracking_uri):
        return None
    return (root_dir / "outputs" / "mlflow" / "artifacts").resolve().as_uri()


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """Id of the experiment ``name``, creating it (under ``artifact_root``/name) when missing.

    A deleted experiment of that name is restored rather than shadowed.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def resolve_experiment_id(client: MlflowClient, experiment: dict[str, str] | None) -> str | None:
    """``{"id": ...}`` or ``{"name": ...}`` → the experiment id, or ``None`` when no active experiment has that
    name (a deleted experiment counts as absent)."""
    if not experiment:
        return None
    if experiment.get("id"):
        return str(experiment["id"])
    name = experiment.get("name")
    if not name:
        raise ValueError(f"an experiment reference needs 'id' or 'name', got {experiment!r}")
    found = client.get_experiment_by_name(name)
    return None if found is None or found.lifecycle_stage == "deleted" else str(found.experiment_id)


def search_all_runs(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    filter_string: str = "",
    run_view_type: int = ViewType.ACTIVE_ONLY,
    order_by: Sequence[str] | None = None,
    page_size: int = SEARCH_PAGE_SIZE,
) -> list[Run]:
    """Every run matching the search, following ``page_token`` until the last page."""
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            experiment_ids=list(experiment_ids),
            filter_string=filter_string,
            run_view_type=run_view_type,
            max_results=page_size,
            order_by=list(order_by) if order_by else None,
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs

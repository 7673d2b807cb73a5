"""Talking to MLflow through an explicit ``MlflowClient``: never the fluent, process-global API.

* :func:`ensure_reachable` answers within ``timeout_s`` whether an HTTP tracking server is up. MLflow's own
  client retries a dead server with exponential back-off for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
  default 7); probing ``/health`` first turns an outage into a fast, clear :class:`MlflowUnavailableError`.
* :func:`search_all_runs` pages through ``search_runs`` until the server has nothing left: one call returns
  at most ``max_results`` runs and says nothing about the rest.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import SearchRuns
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request, verify_rest_response

logger = logging.getLogger(__name__)

#: Page size for paginated searches: the most one ``search_runs`` call returns by default.
SEARCH_PAGE_SIZE = 1000


class MlflowUnavailableError(RuntimeError):
    """The MLflow tracking server could not be reached (refused, timed out, or unhealthy)."""


def make_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def client_or_default(mlflow_client: MlflowClient | None, tracking_uri: str | None = None) -> MlflowClient | None:
    """``mlflow_client`` when given; else a client for ``tracking_uri``, else for ``$MLFLOW_TRACKING_URI``;
    else ``None`` (no MLflow: MLflow's own default would create ``./mlruns`` wherever the process runs)."""
    if mlflow_client is not None:
        return mlflow_client
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return make_client(uri) if uri else None


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


@dataclass(frozen=True)
class RunRecord:
    """What selection (and the benchmark existence check) read of an MLflow run."""

    run_id: str
    status: str
    lifecycle_stage: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None = None


_VIEW_TYPE_NAMES = {ViewType.ACTIVE_ONLY: "ACTIVE_ONLY", ViewType.DELETED_ONLY: "DELETED_ONLY", ViewType.ALL: "ALL"}


def _record_from_json(run: dict[str, Any]) -> RunRecord:
    info, data = run.get("info", {}), run.get("data", {})
    start = info.get("start_time")
    return RunRecord(
        run_id=info.get("run_id") or info.get("run_uuid", ""),
        status=info.get("status", "RUNNING"),
        lifecycle_stage=info.get("lifecycle_stage", "active"),
        start_time=int(start) if start is not None else None,  # int64: a number or a string in protobuf JSON
        tags={t["key"]: t.get("value", "") for t in data.get("tags", ())},
        params={p["key"]: p.get("value", "") for p in data.get("params", ())},
        # protobuf's JSON writes NaN and ±inf as the strings "NaN" / "Infinity" / "-Infinity"; float() reads them
        metrics={m["key"]: float(m.get("value", 0.0)) for m in data.get("metrics", ())},
    )


def search_run_records(
    client: MlflowClient,
    experiment_id: str,
    filter_string: str,
    run_view_type: int = ViewType.ALL,
    page_size: int = SEARCH_PAGE_SIZE,
) -> Iterator[RunRecord]:
    """Every run matching the search, page by page (``page_size`` runs per request).

    Against an HTTP tracking server the pages are read straight from the REST API's JSON
    (``POST /api/2.0/mlflow/runs/search``, through MLflow's own ``http_request`` with the client's credentials
    and retries): ``MlflowClient.search_runs`` would parse every page into protobuf messages with protobuf's
    pure-Python ``json_format`` and then into ``Run`` entities, which costs as much as the server's own work
    (see BENCHMARKS.md). Other stores go through ``search_runs``.
    """
    store = getattr(client._tracking_client, "store", None)  # the store the client was built with (private)
    route = getattr(RestStore, "_METHOD_TO_INFO", {}).get(SearchRuns)  # MLflow's own route for the API (private)
    if not isinstance(store, RestStore) or route is None:
        # Local stores, or an MLflow whose internals moved: the public (slower) client path.
        for run in search_all_runs(client, [experiment_id], filter_string, run_view_type=run_view_type, page_size=page_size):
            yield RunRecord(
                run.info.run_id, run.info.status, run.info.lifecycle_stage, dict(run.data.tags), dict(run.data.params),
                dict(run.data.metrics), run.info.start_time,
            )
        return
    endpoint, method = route
    page_token = None
    while True:
        body: dict[str, Any] = {"experiment_ids": [str(experiment_id)], "filter": filter_string, "run_view_type": _VIEW_TYPE_NAMES[run_view_type], "max_results": page_size}
        if page_token:
            body["page_token"] = page_token
        response = verify_rest_response(http_request(store.get_host_creds(), endpoint, method, json=body), endpoint)
        page = response.json()
        for run in page.get("runs", ()):
            yield _record_from_json(run)
        page_token = page.get("next_page_token")
        if not page_token:
            return


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

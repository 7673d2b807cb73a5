"""Talking to MLflow through an explicit ``MlflowClient``: never the fluent, process-global API.

* Every MLflow HTTP call is bounded. MLflow's client reads its HTTP settings from the environment at each
  request (``MLFLOW_HTTP_REQUEST_TIMEOUT``, default 120 s; ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7,
  with exponential back-off): left alone, a hung ``runs/search`` waits for over 15 minutes and a server that
  answers 503 to every call is retried for minutes. :func:`configure_http` sets them from the config
  (``mlflow.timeout_s``, default 30 s; ``mlflow.max_retries``, default 2; back-off factor 1 s), so one
  call gives up within ``(max_retries + 1) × timeout_s`` plus about 3 s of back-off (and MLflow's jitter, up to 1 s a retry).
* :func:`ensure_reachable` probes ``GET /health``: a refused connection is "down" at once; a slow answer is
  waited for up to ``timeout_s`` (a busy server is not a dead one).
* :func:`search_all_runs` pages through ``search_runs`` until the server has nothing left: one call returns
  at most ``max_results`` runs and says nothing about the rest.
* :func:`search_run_records` is the fast path of a search against an HTTP server: it reads the REST API's JSON
  through MLflow's own route for ``SearchRuns`` (``RestStore._METHOD_TO_INFO``, private). This module is the only
  home of MLflow internals. When they move, the search falls back to the public client (slower, same records);
  with ``$BENCHMARK_PIPELINE_STRICT_MLFLOW_INTERNALS`` set (the test suite sets it) it raises
  :class:`MlflowInternalsMovedError` instead, so a moved internal fails CI rather than hiding behind the fallback.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import SearchRuns
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request, verify_rest_response
from mlflow.version import VERSION as MLFLOW_VERSION

from benchmark_pipeline.config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S
from benchmark_pipeline.layout import RootLayout

logger = logging.getLogger(__name__)

#: Page size for paginated searches: the most one ``search_runs`` call returns by default.
SEARCH_PAGE_SIZE = 1000


class MlflowUnavailableError(RuntimeError):
    """The MLflow tracking server could not be reached (refused, timed out, or unhealthy)."""


class MlflowInternalsMovedError(RuntimeError):
    """An MLflow internal the search fast path relies on is gone (raised only in strict mode, see the module
    docstring)."""


#: Set (to anything but "" or "0") to raise :class:`MlflowInternalsMovedError` instead of falling back.
STRICT_INTERNALS_ENV = "BENCHMARK_PIPELINE_STRICT_MLFLOW_INTERNALS"


BACKOFF_FACTOR_S = 1  # MLflow parses an integer; urllib3 sleeps 1 s, then 2 s, ... between retries
_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"


def configure_http(timeout_s: float | None = None, max_retries: int | None = None) -> None:
    """Bound MLflow's HTTP calls in this process (see the module docstring).

    Values given are applied; values left out keep what the environment already says, else the defaults.
    MLflow has no per-client setting for these, so they are process-wide by MLflow's design.
    """
    if timeout_s is not None:
        os.environ[_TIMEOUT_ENV] = str(max(1, math.ceil(timeout_s)))  # MLflow parses an integer
    if max_retries is not None:
        os.environ[_RETRIES_ENV] = str(max_retries)
    os.environ.setdefault(_TIMEOUT_ENV, str(math.ceil(DEFAULT_TIMEOUT_S)))
    os.environ.setdefault(_RETRIES_ENV, str(DEFAULT_MAX_RETRIES))
    os.environ.setdefault(_BACKOFF_ENV, str(BACKOFF_FACTOR_S))


def current_timeout_s() -> float:
    """The timeout MLflow's calls use now: the configured one, else :data:`DEFAULT_TIMEOUT_S`."""
    try:
        return float(os.environ.get(_TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def make_client(tracking_uri: str, timeout_s: float | None = None, max_retries: int | None = None) -> MlflowClient:
    """An explicit client for ``tracking_uri``, with MLflow's HTTP calls bounded (:func:`configure_http`)."""
    configure_http(timeout_s, max_retries)
    return MlflowClient(tracking_uri=tracking_uri)


def client_or_default(mlflow_client: MlflowClient | None, tracking_uri: str | None = None) -> MlflowClient | None:
    """``mlflow_client`` when given; else a client for ``tracking_uri``, else for ``$MLFLOW_TRACKING_URI``;
    else ``None`` (no MLflow: MLflow's own default would create ``./mlruns`` wherever the process runs).
    Either way MLflow's HTTP calls are bounded (:func:`configure_http`)."""
    configure_http()
    if mlflow_client is not None:
        return mlflow_client
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return make_client(uri) if uri else None


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ensure_reachable(tracking_uri: str, timeout_s: float | None = None) -> None:
    """Raise :class:`MlflowUnavailableError` unless the server answers ``GET /health`` within ``timeout_s``
    (default: :func:`current_timeout_s`). A refused connection fails at once, whatever the timeout.

    Local stores (``sqlite:``, ``file:``, plain paths) are always reachable.
    """
    if not is_remote(tracking_uri):
        return
    timeout_s = current_timeout_s() if timeout_s is None else timeout_s
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                raise MlflowUnavailableError(
                    f"MLflow server {tracking_uri} answered /health with HTTP {response.status}"
                )
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise MlflowUnavailableError(f"MLflow server {tracking_uri} is unreachable: {error}") from None


def reachable_client(client: MlflowClient | None) -> MlflowClient | None:
    """``client`` when its server answers ``/health`` (:func:`ensure_reachable`), else ``None`` with a
    WARNING: a dead server would make every later call wait out its retries, so callers then use the disk
    cache alone."""
    if client is None:
        return None
    try:
        ensure_reachable(client.tracking_uri)
    except MlflowUnavailableError as error:
        logger.warning("%s; using the disk cache only", error)
        return None
    return client


def client_tracking_uri(client: MlflowClient) -> str:
    return str(client.tracking_uri)


def default_artifact_location(tracking_uri: str, root_dir: Path) -> str | None:
    """Artifact root for experiments this project creates: a folder under ``root_dir`` for local stores
    (MLflow would otherwise write ``./mlruns`` wherever the process happens to run), the server's for HTTP."""
    if is_remote(tracking_uri):
        return None
    return RootLayout(root_dir).mlflow_artifacts_dir.resolve().as_uri()


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


def run_record(run: Run) -> RunRecord:
    """The :class:`RunRecord` of a ``Run`` entity (what the public client path returns)."""
    return RunRecord(
        run.info.run_id,
        run.info.status,
        run.info.lifecycle_stage,
        dict(run.data.tags),
        dict(run.data.params),
        dict(run.data.metrics),
        run.info.start_time,
    )


@dataclass(frozen=True)
class RestSearchRoute:
    """Where the fast path sends ``runs/search``: the client's REST store and MLflow's route for the API."""

    store: RestStore
    endpoint: str
    method: str


#: MLflow's private route table on ``RestStore`` (API message → (endpoint, HTTP method)).
_ROUTE_TABLE = "_METHOD_TO_INFO"


def _strict_internals() -> bool:
    return os.environ.get(STRICT_INTERNALS_ENV, "") not in ("", "0")


def rest_search_route(client: MlflowClient) -> RestSearchRoute | None:
    """The fast path's route for ``client``, or ``None`` when the search must take the public client path:
    a local store, or (outside strict mode) an MLflow whose internals moved."""
    # The store the client was built with, and MLflow's own route for the API: both private.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    route = getattr(RestStore, _ROUTE_TABLE, {}).get(SearchRuns)
    if isinstance(store, RestStore) and route is not None:
        endpoint, method = route
        return RestSearchRoute(store, str(endpoint), str(method))
    if is_remote(str(client.tracking_uri)) and _strict_internals():
        raise MlflowInternalsMovedError(
            f"the runs/search fast path found no {'REST store' if not isinstance(store, RestStore) else 'route'} "
            f"for {client.tracking_uri} (MlflowClient._tracking_client.store, RestStore.{_ROUTE_TABLE}[SearchRuns]) "
            f"in MLflow {MLFLOW_VERSION}; update benchmark_pipeline.tracking.rest_search_route"
        )
    return None


# MLflow's http_request is untyped; typed here once.
_http_request: Callable[..., requests.Response] = http_request


def _rest_search_pages(
    route: RestSearchRoute, experiment_id: str, filter_string: str, run_view_type: int, page_size: int
) -> Iterator[RunRecord]:
    page_token = None
    while True:
        body: dict[str, Any] = {
            "experiment_ids": [str(experiment_id)],
            "filter": filter_string,
            "run_view_type": _VIEW_TYPE_NAMES[run_view_type],
            "max_results": page_size,
        }
        if page_token:
            body["page_token"] = page_token
        response = _http_request(route.store.get_host_creds(), route.endpoint, route.method, json=body)
        page = verify_rest_response(response, route.endpoint).json()
        for run in page.get("runs", ()):
            yield _record_from_json(run)
        page_token = page.get("next_page_token")
        if not page_token:
            return


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
    (see BENCHMARKS.md). Other stores go through ``search_runs`` (:func:`rest_search_route`).
    """
    route = rest_search_route(client)
    if route is None:
        runs = search_all_runs(client, [experiment_id], filter_string, run_view_type=run_view_type, page_size=page_size)
        yield from map(run_record, runs)
        return
    yield from _rest_search_pages(route, experiment_id, filter_string, run_view_type, page_size)


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

"""The MLflow adapter (``benchmark_pipeline.tracking``) against the session's real MLflow server over HTTP.

The search fast path reads ``runs/search`` pages as JSON through MLflow's private route table; these tests
check that it is the path taken against an HTTP server, that it returns exactly what the public
``MlflowClient.search_runs`` returns for the same filter, page after page, and that a moved internal fails
loudly in strict mode (which conftest turns on for the whole suite) instead of falling back in silence.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient

from benchmark_pipeline import tracking
from benchmark_pipeline.tracking import (
    STRICT_INTERNALS_ENV,
    MlflowInternalsMovedError,
    RunRecord,
    client_tracking_uri,
    rest_search_route,
    run_record,
    search_all_runs,
    search_run_records,
)


@pytest.fixture
def experiment_id(mlflow_client: MlflowClient) -> str:
    return str(mlflow_client.create_experiment(f"tracking-{uuid.uuid4().hex[:12]}"))


def _make_runs(client: MlflowClient, experiment_id: str, count: int) -> list[str]:
    """``count`` runs with tags, params and metrics (NaN and infinities included), some of them FINISHED,
    FAILED or deleted."""
    run_ids = []
    for index in range(count):
        run_id = client.create_run(experiment_id, tags={"group": "even" if index % 2 == 0 else "odd"}).info.run_id
        values = [float(index), math.nan, math.inf, -math.inf]
        client.log_batch(
            run_id,
            metrics=[Metric(f"m{j}", value, 1_000 + index, 0) for j, value in enumerate(values)],
            params=[Param("index", str(index)), Param("empty", "")],
            tags=[RunTag("note", f"run {index}")],
        )
        if index % 3 == 1:
            client.set_terminated(run_id, "FINISHED")
        elif index % 3 == 2:
            client.set_terminated(run_id, "FAILED")
        run_ids.append(run_id)
    client.delete_run(run_ids[-1])
    return run_ids


def _same(a: list[RunRecord], b: list[RunRecord]) -> bool:
    """Record lists equal field by field, NaN equal to NaN (``nan != nan`` would fail any comparison)."""

    def normal(record: RunRecord) -> tuple[object, ...]:
        metrics = {k: ("nan" if math.isnan(v) else v) for k, v in record.metrics.items()}
        return (
            record.run_id,
            record.status,
            record.lifecycle_stage,
            record.tags,
            record.params,
            metrics,
            record.start_time,
        )

    return [normal(r) for r in a] == [normal(r) for r in b]


def test_the_fast_path_is_taken_against_an_http_server(mlflow_client: MlflowClient, mlflow_server: str) -> None:
    route = rest_search_route(mlflow_client)
    assert route is not None, "the fast path is not taken: MLflow's internals moved"
    assert isinstance(route.store, RestStore)
    assert (route.endpoint, route.method) == ("/api/2.0/mlflow/runs/search", "POST")
    assert client_tracking_uri(mlflow_client) == mlflow_server


def test_a_local_store_takes_the_public_path(tmp_path: Path) -> None:
    local = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert rest_search_route(local) is None


@pytest.mark.parametrize(
    ("filter_string", "view"),
    [
        ("", ViewType.ALL),
        ("", ViewType.ACTIVE_ONLY),
        ("tags.group = 'even'", ViewType.ALL),
        ("attributes.status = 'FINISHED'", ViewType.ACTIVE_ONLY),
        ("tags.group LIKE '%'", ViewType.DELETED_ONLY),
    ],
)
def test_the_fast_path_returns_what_search_runs_returns(
    mlflow_client: MlflowClient, experiment_id: str, filter_string: str, view: int
) -> None:
    _make_runs(mlflow_client, experiment_id, 7)
    fast = list(search_run_records(mlflow_client, experiment_id, filter_string, view, page_size=2))
    public = [
        run_record(run)
        for run in mlflow_client.search_runs([experiment_id], filter_string, run_view_type=view, max_results=1000)
    ]
    assert public, "the filter matches no run: the comparison would prove nothing"
    assert _same(fast, public)
    assert len({r.run_id for r in fast}) == len(fast)


def test_the_fast_path_follows_every_page(mlflow_client: MlflowClient, experiment_id: str) -> None:
    created = _make_runs(mlflow_client, experiment_id, 5)
    first_page = mlflow_client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=2)
    assert len(first_page) == 2 and first_page.token  # one request alone would miss runs
    fast = list(search_run_records(mlflow_client, experiment_id, "", ViewType.ALL, page_size=2))
    assert sorted(r.run_id for r in fast) == sorted(created)
    assert _same(fast, [run_record(r) for r in search_all_runs(mlflow_client, [experiment_id], "", ViewType.ALL)])


def test_a_moved_internal_fails_loudly_in_strict_mode(
    mlflow_client: MlflowClient, experiment_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_runs(mlflow_client, experiment_id, 3)
    expected = list(search_run_records(mlflow_client, experiment_id, "", ViewType.ALL))
    # MLflow renames its route table (as a new release may; MLflow's own calls need the table, so the adapter
    # is pointed at a name MLflow does not have): strict mode, which the suite runs in, raises.
    monkeypatch.setattr(tracking, "_ROUTE_TABLE", "_METHOD_TO_INFO_RENAMED")
    monkeypatch.setenv(STRICT_INTERNALS_ENV, "1")
    with pytest.raises(MlflowInternalsMovedError, match="_METHOD_TO_INFO_RENAMED"):
        list(search_run_records(mlflow_client, experiment_id, "", ViewType.ALL))
    # Outside strict mode (a user's process) the search falls back to the public client: same records.
    monkeypatch.delenv(STRICT_INTERNALS_ENV)
    assert rest_search_route(mlflow_client) is None
    assert _same(list(search_run_records(mlflow_client, experiment_id, "", ViewType.ALL)), expected)


def test_the_suite_runs_in_strict_mode() -> None:
    assert os.environ.get(STRICT_INTERNALS_ENV) == "1", "conftest must turn strict mode on for the whole suite"

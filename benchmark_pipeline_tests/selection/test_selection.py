"""Best-trial selection across MLflow, Optuna studies and trial folders (benchmark_pipeline.selection).

Rules under test (selection/trial_retrieval.py): every source is scanned and ineligible items are counted per
reason; the highest-priority *answering* source wins (MLflow > study > disk); the best trial has the best
objective, ties going to the lowest trial number, then the smallest trial_key_hash, then the smallest run id;
disagreements are a WARNING and are listed; an unreachable MLflow is a quick WARNING and a fallback; nothing
anywhere is a NoTrialsFoundError naming where it looked.

Real sweeps (``demo_sweeps``) are read only; tests that change data copy it or hand-build their own, following
the HPO contract (hpo/contract.py) with the builders of ``selection/builders.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Metric, Param, ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.selection import (
    SELECTION_SCOPES,
    NoTrialsFoundError,
    SourceScan,
    StudyDirectionError,
    TrialCandidate,
    find_best_trials_for_backbones,
    format_selection_table,
    iter_trial_infos,
    retrieve_best_trials,
)
from benchmark_pipeline.selection.records import is_finite_metric
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.ports import free_port
from benchmark_pipeline_tests.selection.builders import (
    BENCHMARK_CONFIG,
    DATA_CONFIG,
    METRIC,
    RETRIEVAL_LOGGER,
    Trial,
    contract_tags,
    hexkey,
    log_run,
    new_experiment,
    picks,
    retrieve,
    unique_name,
    warnings_from,
    write_folder,
    write_studies,
    write_study,
)


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """``retrieve_best_trials`` falls back to ``$MLFLOW_TRACKING_URI`` when given no client: these tests say
    explicitly which MLflow they mean."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ============================================================================================ unit rules


@pytest.mark.parametrize(
    ("value", "finite"),
    [
        (0.5, True),
        (0, True),
        (-3, True),
        (sys.float_info.max / 2, True),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        (sys.float_info.max, False),  # MLflow's SQL stores clamp +inf to this
        (-sys.float_info.max, False),
        (True, False),
        ("0.5", False),
        (None, False),
    ],
)
def test_is_finite_metric(value: Any, finite: bool) -> None:
    assert is_finite_metric(value) is finite


def test_best_candidate_does_not_depend_on_listing_order() -> None:
    def candidate(metric: float, number: int | None, key: str, run_id: str | None) -> TrialCandidate:
        return TrialCandidate("mlflow", "b", "v1", key, metric, number, run_id)

    expected = candidate(0.9, 2, "bbb", "r2")
    pool = [
        candidate(0.9, 3, "aaa", "r0"),  # later trial number
        candidate(0.9, 2, "ccc", "r1"),  # larger key
        expected,
        candidate(0.9, 2, "bbb", "r3"),  # same trial, larger run id
        candidate(0.9, None, "000", "r0"),  # no trial number: last
        candidate(0.8, 0, "000", "r0"),  # worse metric
    ]
    for order in itertools.permutations(pool):
        scan = SourceScan("mlflow", "b", available=True, eligible=list(order))
        assert scan.best("maximize") == expected
    scan = SourceScan("mlflow", "b", available=True, eligible=pool)
    assert scan.best("minimize") == pool[-1]


# ============================================================================= real sweeps (read only)


def _retrieve_demo(
    demo: DemoSweeps, client: MlflowClient | None, scope: str = "overall", hpo_dir: Path | None = None, **selection: Any
) -> dict[str, Any]:
    config = demo.config
    return retrieve_best_trials(
        backbone_values=list(config.backbones),
        hpo_experiments=config.hpo_experiments(),
        benchmark_experiment=config.benchmark_experiment(),
        selection_config={"hpo_output_dir": str(hpo_dir or config.hpo_output_dir), **selection},
        hpo_config=config.hpo_config,
        data_config=config.data_config,
        root_dir=config.root_dir,
        environment=config.environment,
        selection_scope=scope,
        mlflow_client=client,
    )


def _expected_best(demo: DemoSweeps, backbone: str, variants: Iterable[str]) -> tuple[float, int, str]:
    """(metric, trial number, trial key) of the best trial, computed from the Optuna studies directly."""
    candidates = []
    for variant in variants:
        summary = demo.summaries[(backbone, variant)]
        study = optuna.load_study(study_name=summary.study_name, storage=summary.storage_url)
        candidates += [(t.value, t.number, t.user_attrs[contract.ATTR_TRIAL_KEY_HASH]) for t in study.get_trials()]
    return min(candidates, key=lambda c: (-c[0], c[1], c[2]))


def _copy_hpo_dir(demo: DemoSweeps, destination: Path) -> Path:
    shutil.copytree(demo.hpo_dir, destination)
    return destination


def test_real_sweeps_overall_mlflow_answers_and_all_sources_agree(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient
) -> None:
    result = _retrieve_demo(demo_sweeps, mlflow_client)
    assert list(result) == ["tiny_transformer", "bilstm"]
    for backbone, info in result.items():
        metric, number, key = _expected_best(demo_sweeps, backbone, ("v1", "v2"))
        assert (info["metric"], info["trial_number"], info["trial_id"]) == (metric, number, key)
        assert info["trial_key_hash"] == key
        assert info["source"] == "mlflow"
        assert info["sources_agree"] is True and info["disagreements"] == []
        assert picks(info) == {"mlflow": key, "study": key, "disk": key}
        for source in ("mlflow", "study", "disk"):
            summary = info["candidates"][source]
            assert summary["available"] is True
            assert summary["eligible"] == 6
            assert summary["ineligible"] == {}
        assert (info["backbone"], info["selection_scope"], info["direction"], info["metric_name"]) == (
            backbone,
            "overall",
            "maximize",
            METRIC,
        )
        # Cross references: the run, the folder, the ONNX model.
        run = mlflow_client.get_run(info["run_id"])
        assert run.data.tags[contract.TAG_TRIAL_KEY_HASH] == key
        assert run.data.metrics[METRIC] == metric
        folder = Path(info["trial_dir"])
        meta = json.loads((folder / contract.TRIAL_META_FILE).read_text(encoding="utf-8"))
        assert meta["trial_key_hash"] == key and meta["mlflow_run_id"] == info["run_id"]
        assert info["hyperparameters"] == meta["hyperparameters"]
        assert info["variant"] == meta["variant"]
        assert info["study_key_hash"] == meta["study_key_hash"]
        assert info["model_path"] == str(folder / contract.ONNX_FILE)
        assert info["model_uri"] == f"runs:/{info['run_id']}/model/model.onnx"


def test_real_sweeps_per_variant_shape(demo_sweeps: DemoSweeps, mlflow_client: MlflowClient) -> None:
    result = _retrieve_demo(demo_sweeps, mlflow_client, scope="per_variant")
    assert list(result) == ["tiny_transformer", "bilstm"]
    for backbone, per_variant in result.items():
        assert list(per_variant) == ["v1", "v2"]
        for variant, info in per_variant.items():
            metric, number, key = _expected_best(demo_sweeps, backbone, (variant,))
            assert info["variant"] == variant and info["backbone"] == backbone
            assert (info["metric"], info["trial_number"], info["trial_id"]) == (metric, number, key)
            assert info["metric"] == demo_sweeps.summaries[(backbone, variant)].best_value
            assert info["selection_scope"] == "per_variant"
            assert info["source"] == "mlflow" and info["sources_agree"] is True
            assert {s: c["eligible"] for s, c in info["candidates"].items()} == {"mlflow": 3, "study": 3, "disk": 3}
    assert len(list(iter_trial_infos(result))) == 4


@pytest.mark.parametrize("scope", SELECTION_SCOPES)
def test_each_source_alone_retrieves_the_same_trial(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient, tmp_path: Path, scope: str
) -> None:
    def essentials(result: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (
                i["backbone"],
                i["variant"],
                i["trial_id"],
                i["run_id"],
                i["metric"],
                i["trial_number"],
                i["hyperparameters"],
                i["study_key_hash"],
            )
            for i in iter_trial_infos(result)
        ]

    empty = tmp_path / "empty"
    empty.mkdir()
    mlflow_only = _retrieve_demo(demo_sweeps, mlflow_client, scope, hpo_dir=empty)
    copy = _copy_hpo_dir(demo_sweeps, tmp_path / "copy")
    study_only = _retrieve_demo(demo_sweeps, None, scope, hpo_dir=copy)
    for study_db in copy.glob(f"*/study-*/{contract.STUDY_DB_FILE}"):
        study_db.unlink()
    disk_only = _retrieve_demo(demo_sweeps, None, scope, hpo_dir=copy)

    for result, source, with_trials in (
        (mlflow_only, "mlflow", ["mlflow"]),
        (study_only, "study", ["study", "disk"]),
        (disk_only, "disk", ["disk"]),
    ):
        for info in iter_trial_infos(result):
            assert info["source"] == source
            assert [s for s, c in info["candidates"].items() if c["eligible"]] == with_trials
    assert essentials(mlflow_only) == essentials(study_only) == essentials(disk_only)
    assert len(essentials(mlflow_only)) == (2 if scope == "overall" else 4)
    # The folder is found from MLflow's answer too (it is not under the empty HPO dir, so none).
    assert all(i["trial_dir"] is None for i in iter_trial_infos(mlflow_only))
    assert all(Path(i["model_path"]).is_file() for i in iter_trial_infos(disk_only))
    no_uri = next(iter_trial_infos(study_only))["candidates"]["mlflow"]
    assert no_uri["available"] is False and "no MLflow tracking URI" in no_uri["error"]


def test_fallback_when_the_mlflow_experiment_does_not_exist(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    missing = unique_name("no-such-experiment")
    config = demo_sweeps.config
    result = retrieve_best_trials(
        list(config.backbones), {b: {"name": missing} for b in config.backbones}, None,
        {"hpo_output_dir": str(config.hpo_output_dir)}, config.hpo_config, config.data_config,
        config.root_dir, config.environment, mlflow_client=mlflow_client,
    )  # fmt: skip
    for backbone, info in result.items():
        assert info["source"] == "study"
        assert info["trial_id"] == _expected_best(demo_sweeps, backbone, ("v1", "v2"))[2]
        mlflow_summary = info["candidates"]["mlflow"]
        assert mlflow_summary["available"] is True and mlflow_summary["eligible"] == 0
        assert any(missing in place and "(missing)" in place for place in mlflow_summary["looked_at"])
        assert info["sources_agree"] is True
    assert not [m for m in warnings_from(caplog) if "unavailable" in m]


def test_fallback_when_the_mlflow_server_is_unreachable(
    demo_sweeps: DemoSweeps, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dead_uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _retrieve_demo(demo_sweeps, MlflowClient(tracking_uri=dead_uri))
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"falling back took {elapsed:.1f}s"
    outage = [m for m in warnings_from(caplog) if "MLflow is unavailable" in m]
    assert len(outage) == 1, "one WARNING for the outage, not one per backbone"
    assert dead_uri in outage[0]
    for backbone, info in result.items():
        assert info["source"] == "study"
        assert info["trial_id"] == _expected_best(demo_sweeps, backbone, ("v1", "v2"))[2]
        assert info["candidates"]["mlflow"]["available"] is False
        assert "unreachable" in info["candidates"]["mlflow"]["error"]

    # The same through selection_config["tracking_uri"], with the studies gone: the folders answer.
    copy = _copy_hpo_dir(demo_sweeps, tmp_path / "copy")
    for study_db in copy.glob(f"*/study-*/{contract.STUDY_DB_FILE}"):
        study_db.unlink()
    caplog.clear()
    from_disk = _retrieve_demo(demo_sweeps, None, hpo_dir=copy, tracking_uri=dead_uri, mlflow_timeout_s=1)
    assert [i["source"] for i in from_disk.values()] == ["disk", "disk"]
    assert [i["trial_id"] for i in from_disk.values()] == [i["trial_id"] for i in result.values()]
    assert [i["run_id"] for i in from_disk.values()] == [i["run_id"] for i in result.values()]
    assert any("MLflow is unavailable" in m for m in warnings_from(caplog))
    assert all(i["candidates"]["study"]["available"] is False for i in from_disk.values())


def test_disagreement_between_sources_is_a_warning_and_mlflow_wins(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    copy = _copy_hpo_dir(demo_sweeps, tmp_path / "copy")
    _, _, best_key = _expected_best(demo_sweeps, "bilstm", ("v1", "v2"))
    _, _, best_v2_key = _expected_best(demo_sweeps, "bilstm", ("v2",))
    # Make a bilstm v2 trial that loses overall and in v2 the best one, on disk only.
    summary = demo_sweeps.summaries[("bilstm", "v2")]
    folder = next(
        p
        for p in sorted((copy / "bilstm" / Path(summary.study_dir).name).glob("trial-*"))
        if p.name[6:] not in (best_key[:8], best_v2_key[:8])
    )
    meta = json.loads((folder / contract.TRIAL_META_FILE).read_text(encoding="utf-8"))
    metrics = json.loads((folder / contract.METRICS_FILE).read_text(encoding="utf-8"))
    (folder / contract.METRICS_FILE).write_text(json.dumps({**metrics, METRIC: 0.99}), encoding="utf-8")

    result = _retrieve_demo(demo_sweeps, mlflow_client, hpo_dir=copy)
    bilstm = result["bilstm"]
    assert bilstm["source"] == "mlflow" and bilstm["trial_id"] == best_key
    assert bilstm["sources_agree"] is False
    assert bilstm["disagreements"] == [
        {"source": "disk", "trial_id": meta["trial_key_hash"], "metric": 0.99, "run_id": meta["mlflow_run_id"]}
    ]
    assert picks(bilstm) == {"mlflow": best_key, "study": best_key, "disk": meta["trial_key_hash"]}
    assert result["tiny_transformer"]["sources_agree"] is True
    disagreement = [m for m in warnings_from(caplog) if "disagree" in m]
    assert len(disagreement) == 1
    assert (
        "bilstm" in disagreement[0]
        and best_key[:12] in disagreement[0]
        and meta["trial_key_hash"][:12] in disagreement[0]
    )
    assert "Using mlflow" in disagreement[0]
    table = format_selection_table(result)
    assert f"DISAGREE: disk={meta['trial_key_hash'][:8]}" in table

    # Per variant, only the edited partition disagrees.
    caplog.clear()
    per_variant = _retrieve_demo(demo_sweeps, mlflow_client, scope="per_variant", hpo_dir=copy)
    assert per_variant["bilstm"]["v2"]["sources_agree"] is False
    assert per_variant["bilstm"]["v2"]["disagreements"][0]["trial_id"] == meta["trial_key_hash"]
    assert per_variant["bilstm"]["v1"]["sources_agree"] is True
    assert all(per_variant["tiny_transformer"][v]["sources_agree"] for v in ("v1", "v2"))
    assert any("bilstm/v2" in m for m in warnings_from(caplog))


def test_deprecated_finder_warns_and_matches_retrieve_best_trials(
    demo_sweeps: DemoSweeps, mlflow_client: MlflowClient
) -> None:
    config = demo_sweeps.config
    with pytest.warns(DeprecationWarning, match="retrieve_best_trials"):
        old = find_best_trials_for_backbones(
            list(config.backbones), None, config.hpo_config, config.data_config, config.root_dir, config.environment,
            hpo_experiments=config.hpo_experiments(), mlflow_client=mlflow_client,
        )  # fmt: skip
    new = retrieve_best_trials(
        list(config.backbones), config.hpo_experiments(), None, {}, config.hpo_config, config.data_config,
        config.root_dir, config.environment, selection_scope="overall", mlflow_client=mlflow_client,
    )  # fmt: skip
    assert old == new
    assert [i["source"] for i in new.values()] == ["mlflow", "mlflow"]

    # Given studies are read as the study source, and the pick does not change.
    studies = {
        b: optuna.load_study(study_name=s.study_name, storage=s.storage_url)
        for (b, v), s in demo_sweeps.summaries.items()
        if v == "v1"
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with_studies = find_best_trials_for_backbones(
            list(config.backbones), studies, config.hpo_config, config.data_config, config.root_dir, config.environment
        )
    assert [i["source"] for i in with_studies.values()] == ["study", "study"]
    assert [i["trial_id"] for i in with_studies.values()] == [i["trial_id"] for i in new.values()]


def test_format_selection_table_both_shapes(demo_sweeps: DemoSweeps, mlflow_client: MlflowClient) -> None:
    for scope, rows in (("overall", 2), ("per_variant", 4)):
        result = _retrieve_demo(demo_sweeps, mlflow_client, scope=scope)
        lines = format_selection_table(result).splitlines()
        assert lines[0].split()[:3] == ["Backbone", "Variant", "Trial"]
        assert set(lines[1]) == {"-"}
        assert len(lines) == rows + 2
        for line, info in zip(lines[2:], iter_trial_infos(result), strict=True):
            assert line.split()[:3] == [info["backbone"], info["variant"], info["trial_id"][:12]]
            assert f"{info['metric']:.4f}" in line and "mlflow" in line and line.endswith("agree")


# ================================================================================ hand-built: tie rules


#: Ties in every rule: the best metric 0.8 is shared by v1#1, v1#2 and v2#1; v1#2 has the smallest key but a
#: later number; v1#1 and v2#1 share number 1 and v2#1 has the smaller key. So overall → v2#1, v1 → v1#1.
def tie_trials(backbone: str) -> list[Trial]:
    return [
        Trial(backbone, "v1", 0, 0.70),
        Trial(backbone, "v1", 1, 0.80, key=hexkey(f"{backbone}-v1-1", "2")),
        Trial(backbone, "v1", 2, 0.80, key=hexkey(f"{backbone}-v1-2", "0")),
        Trial(backbone, "v1", 3, 0.75),
        Trial(backbone, "v2", 0, 0.65),
        Trial(backbone, "v2", 1, 0.80, key=hexkey(f"{backbone}-v2-1", "1")),
        Trial(backbone, "v2", 2, 0.60),
    ]


def _build_tie_sources(
    client: MlflowClient, hpo_dir: Path, backbone: str, order_seed: int
) -> tuple[str, dict[str, list[str]], list[tuple[str, int]]]:
    """All three sources for ``tie_trials``, written in a shuffled order; v2#1 is logged twice in MLflow
    (a rerun of the same trial: the smaller run id must win)."""
    trials = tie_trials(backbone)
    shuffled = [*trials, trials[5]]
    random.Random(order_seed).shuffle(shuffled)
    name, experiment_id = new_experiment(client, "ties")
    run_ids: dict[str, list[str]] = {}
    for index, trial in enumerate(shuffled):
        run_ids.setdefault(trial.trial_key, []).append(
            log_run(client, experiment_id, trial, start_time=1_700_000_000_000 + index)
        )
    for trial in shuffled:
        write_folder(hpo_dir, trial, run_id=min(run_ids[trial.trial_key]))
    write_studies(hpo_dir, trials, {k: min(v) for k, v in run_ids.items()})
    return name, run_ids, [(t.variant, t.number) for t in shuffled]


def _comparable(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A retrieval result without the parts that name places (run ids, folders, experiments)."""
    kept = (
        "backbone",
        "variant",
        "trial_id",
        "trial_number",
        "metric",
        "source",
        "hyperparameters",
        "sources_agree",
        "study_key_hash",
    )
    return [
        {
            **{k: i[k] for k in kept},
            "eligible": {s: c["eligible"] for s, c in i["candidates"].items()},
            "picks": picks(i),
        }
        for i in iter_trial_infos(result)
    ]


def test_ties_follow_number_then_key_then_run_id_in_every_source_and_any_order(
    mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    backbone = "tied"
    trials = {(t.variant, t.number): t for t in tie_trials(backbone)}
    results, orders = [], []
    for seed in (1, 2):
        hpo_dir = tmp_path / f"order-{seed}"
        name, run_ids, order = _build_tie_sources(mlflow_client, hpo_dir, backbone, seed)
        orders.append(order)
        experiments = {backbone: {"name": name}}
        overall = retrieve([backbone], hpo_dir, client=mlflow_client, experiments=experiments)
        per_variant = retrieve([backbone], hpo_dir, client=mlflow_client, experiments=experiments, scope="per_variant")
        info = overall[backbone]
        winner = trials[("v2", 1)]
        assert (info["variant"], info["trial_number"], info["trial_id"]) == ("v2", 1, winner.trial_key)
        assert picks(info) == {"mlflow": winner.trial_key, "study": winner.trial_key, "disk": winner.trial_key}
        assert info["run_id"] == min(run_ids[winner.trial_key]), "same trial logged twice: the smaller run id wins"
        assert info["candidates"]["mlflow"]["pick"]["run_id"] == min(run_ids[winner.trial_key])
        assert per_variant[backbone]["v1"]["trial_id"] == trials[("v1", 1)].trial_key
        assert per_variant[backbone]["v2"]["trial_id"] == winner.trial_key
        assert {s: c["eligible"] for s, c in info["candidates"].items()} == {"mlflow": 8, "study": 7, "disk": 7}
        results.append((_comparable(overall), _comparable(per_variant)))
    assert orders[0] != orders[1]
    assert results[0] == results[1], "the same trials listed in another order must give the same selection"


def test_minimize_picks_the_lowest_metric(tmp_path: Path) -> None:
    trials = [
        Trial("lows", "v1", 0, 0.3),
        Trial("lows", "v1", 1, 0.2),
        Trial("lows", "v1", 2, 0.2),
        Trial("lows", "v1", 3, 0.9),
    ]
    for trial in trials:
        write_folder(tmp_path, trial)
    info = retrieve(["lows"], tmp_path, direction="minimize")["lows"]
    assert (info["source"], info["trial_number"], info["metric"], info["direction"]) == ("disk", 1, 0.2, "minimize")


def test_a_tie_across_a_page_boundary_of_the_mlflow_search(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """1002 runs of one backbone: one search page holds 1000. The best value is tied between a run on the first
    page and one on the last; the last page's run has the lower trial number and must win.

    The 999 filler runs are tagged RUNNING runs without metrics (one request each, so the test stays around
    20-30 s on a 2-core machine; finished runs with metrics take three requests each). They fill the pages exactly
    as eligible runs would, and their count proves every page was read.
    """
    backbone = "paged"
    name, experiment_id = new_experiment(mlflow_client, "pages")
    base = 1_700_000_000_000
    first_page = Trial(backbone, "v1", 50, 0.9)
    last_page = Trial(backbone, "v1", 3, 0.9)
    runner_up = Trial(backbone, "v2", 0, 0.8)
    # The search lists newest first: the newest run is on the first page, the oldest on the last.
    first_run = log_run(mlflow_client, experiment_id, first_page, start_time=base + 10_000_000)
    last_run = log_run(mlflow_client, experiment_id, last_page, start_time=base - 10_000_000)
    log_run(mlflow_client, experiment_id, runner_up, start_time=base - 5_000_000)

    def filler(index: int) -> str:
        tags = contract_tags(Trial(backbone, "v1", 100 + index, 0.5))
        return mlflow_client.create_run(experiment_id, start_time=base + index, tags=tags).info.run_id

    with ThreadPoolExecutor(max_workers=2) as pool:
        fillers = list(pool.map(filler, range(999)))
    assert len(set(fillers)) == 999

    page = mlflow_client.search_runs(
        [experiment_id], f"tags.`{contract.TAG_BACKBONE}` = '{backbone}'", run_view_type=ViewType.ALL, max_results=1000
    )
    page_ids = {r.info.run_id for r in page}
    assert len(page_ids) == 1000
    assert page.token and first_run in page_ids and last_run not in page_ids, "the tie must straddle the page boundary"

    info = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})[backbone]
    assert info["source"] == "mlflow"
    assert (info["trial_id"], info["trial_number"], info["run_id"], info["metric"]) == (
        last_page.trial_key,
        3,
        last_run,
        0.9,
    )
    assert info["candidates"]["mlflow"]["eligible"] == 3
    assert info["candidates"]["mlflow"]["ineligible"] == {"status_running": 999}


# ============================================================================ hand-built: eligibility


def test_ineligible_items_are_counted_per_source_and_reason(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backbone = "messy"
    hpo_dir = tmp_path / "hpo"
    name, experiment_id = new_experiment(mlflow_client, "messy")
    good = Trial(backbone, "v1", 0, 0.5)
    bad = [Trial(backbone, "v1", n, 0.99) for n in range(1, 40)]  # each would win if it were eligible

    # --- MLflow
    good_run = log_run(mlflow_client, experiment_id, good)
    log_run(mlflow_client, experiment_id, bad[0], status="FAILED")
    log_run(mlflow_client, experiment_id, bad[1], status="RUNNING")
    log_run(mlflow_client, experiment_id, bad[2], status="KILLED")
    log_run(mlflow_client, experiment_id, bad[3], delete=True)
    log_run(mlflow_client, experiment_id, bad[4], tags={contract.TAG_TRIAL_KEY_HASH: None})
    log_run(mlflow_client, experiment_id, bad[5], tags={contract.TAG_STUDY_KEY_HASH: None})
    log_run(mlflow_client, experiment_id, bad[6], log_metric=False)
    log_run(mlflow_client, experiment_id, Trial(backbone, "v1", 107, math.nan))
    log_run(mlflow_client, experiment_id, Trial(backbone, "v1", 108, math.inf))
    log_run(mlflow_client, experiment_id, Trial(backbone, "v1", 109, -math.inf))
    log_run(mlflow_client, experiment_id, bad[10], tags={contract.TAG_TRIAL_NUMBER: "eleven"})
    log_run(mlflow_client, experiment_id, bad[11], tags={contract.TAG_DATA_FINGERPRINT: "1-0000000000000000"})
    log_run(mlflow_client, experiment_id, Trial("someone_else", "v1", 0, 0.99))  # another backbone: not counted

    # --- Optuna: one good study with every non-COMPLETE state, one study on other data, one corrupt file.
    state = optuna.trial.TrialState
    write_study(
        hpo_dir, backbone, "v1",
        [
            {"value": 0.5, "trial_key": good.trial_key, "run_id": good_run},
            {"state": state.PRUNED, "trial_key": bad[0].trial_key},
            {"state": state.FAIL, "trial_key": bad[1].trial_key},
            {"state": state.RUNNING, "trial_key": bad[2].trial_key},
            {"state": state.WAITING, "trial_key": bad[3].trial_key},
            {"value": math.inf, "trial_key": bad[4].trial_key},
            {"value": 0.99},  # no trial_key_hash attribute
        ],
    )  # fmt: skip
    write_study(
        hpo_dir,
        backbone,
        "v2",
        [{"value": 0.99, "trial_key": bad[5].trial_key}],
        attrs={contract.STUDY_ATTR_DATA_FINGERPRINT: "1-0000000000000000"},
    )
    corrupt = hpo_dir / backbone / "study-ffffffff" / contract.STUDY_DB_FILE
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"this is not a sqlite database" * 100)

    # --- Trial folders
    write_folder(hpo_dir, good, run_id=good_run)
    truncated = write_folder(hpo_dir, bad[12], metrics_text='{"macro-f1": 0.9')
    write_folder(hpo_dir, bad[13], metrics_text="[0.99]")
    write_folder(hpo_dir, bad[14], metrics_text='{"macro-f1": "0.99"}')
    write_folder(hpo_dir, bad[15], metrics_text='{"macro-f1": true}')
    write_folder(hpo_dir, bad[16], metrics_text='{"macro-f1": NaN}')
    write_folder(hpo_dir, bad[17], metrics_text='{"macro-f1": Infinity}')
    no_meta = write_folder(hpo_dir, bad[18], write_meta=False)
    write_folder(hpo_dir, bad[19], meta_text='{"backbone": "messy", ')
    write_folder(hpo_dir, bad[20], write_metrics=False)
    write_folder(hpo_dir, bad[21], metrics_text='{"accuracy": 0.99}')
    write_folder(hpo_dir, bad[22], drop_meta=["trial_key_hash"])
    write_folder(hpo_dir, bad[23], meta={"data_fingerprint": "1-0000000000000000"})
    write_folder(hpo_dir, bad[24], meta={"backbone": "someone_else"})

    result = retrieve([backbone], hpo_dir, client=mlflow_client, experiments={backbone: {"name": name}})
    info = result[backbone]
    assert (info["trial_id"], info["metric"], info["source"], info["run_id"]) == (
        good.trial_key,
        0.5,
        "mlflow",
        good_run,
    )
    assert info["sources_agree"] is True
    candidates = info["candidates"]
    assert {s: c["eligible"] for s, c in candidates.items()} == {"mlflow": 1, "study": 1, "disk": 1}
    assert candidates["mlflow"]["ineligible"] == {
        "deleted": 1,
        "malformed_trial_number": 1,
        "missing_metric": 1,
        f"missing_tag:{contract.TAG_STUDY_KEY_HASH}": 1,
        f"missing_tag:{contract.TAG_TRIAL_KEY_HASH}": 1,
        "non_finite_metric": 3,  # NaN, and ±inf which MLflow stores as ±sys.float_info.max
        "other_data_fingerprint": 1,
        "status_failed": 1,
        "status_killed": 1,
        "status_running": 1,
    }
    assert candidates["study"]["ineligible"] == {
        f"missing_attr:{contract.ATTR_TRIAL_KEY_HASH}": 1,
        "non_finite_metric": 1,
        "other_data_fingerprint": 1,
        "state_fail": 1,
        "state_pruned": 1,
        "state_running": 1,
        "state_waiting": 1,
        "unreadable_storage": 1,
    }
    assert candidates["disk"]["ineligible"] == {
        "backbone_mismatch": 1,
        "missing_metric": 1,
        "missing_metrics_file": 1,
        "missing_trial_key_hash": 1,
        "missing_trial_meta": 1,
        "non_finite_metric": 2,
        "non_numeric_metric": 2,
        "other_data_fingerprint": 1,
        "unreadable_metrics_file": 2,
        "unreadable_trial_meta": 1,
    }
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(truncated / contract.METRICS_FILE) in m and "unreadable" in m for m in logged)
    assert any(str(no_meta / contract.TRIAL_META_FILE) in m for m in logged)
    assert any(str(corrupt) in m for m in logged), "a corrupt study.db is logged with its path"
    summary_line = next(
        r.getMessage()
        for r in caplog.records
        if r.name == RETRIEVAL_LOGGER and "Best trial for messy" in r.getMessage()
    )
    assert (
        "'status_failed': 1" in summary_line
        and "'state_pruned': 1" in summary_line
        and "'backbone_mismatch': 1" in summary_line
    )
    # Per variant: the v2 study (other data) has nothing eligible, so only v1 is a partition.
    per_variant = retrieve(
        [backbone], hpo_dir, client=mlflow_client, experiments={backbone: {"name": name}}, scope="per_variant"
    )
    assert list(per_variant[backbone]) == ["v1"]
    assert per_variant[backbone]["v1"]["trial_id"] == good.trial_key


def test_mlflow_stores_infinite_metrics_clamped_and_they_stay_ineligible(
    mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    backbone = "clamped"
    name, experiment_id = new_experiment(mlflow_client, "clamped")
    run_id = log_run(mlflow_client, experiment_id, Trial(backbone, "v1", 0, math.inf))
    stored = mlflow_client.get_run(run_id).data.metrics[METRIC]
    assert stored == sys.float_info.max or math.isinf(stored)
    log_run(mlflow_client, experiment_id, Trial(backbone, "v1", 1, 0.1))
    info = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})[backbone]
    assert (info["trial_number"], info["metric"]) == (1, 0.1)
    assert info["candidates"]["mlflow"]["ineligible"] == {"non_finite_metric": 1}


def test_runs_without_variant_tag_take_it_from_the_study_name(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    backbone = "untagged"
    name, experiment_id = new_experiment(mlflow_client, "untagged")
    log_run(mlflow_client, experiment_id, Trial(backbone, "v2", 0, 0.6), tags={contract.TAG_VARIANT: None})
    log_run(
        mlflow_client, experiment_id, Trial(backbone, "v1", 0, 0.7),
        tags={contract.TAG_VARIANT: None, contract.TAG_STUDY_NAME: None, contract.TAG_TRIAL_NUMBER: None},
    )  # fmt: skip
    result = retrieve(
        [backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}}, scope="per_variant"
    )
    assert list(result[backbone]) == ["default", "v2"]
    assert result[backbone]["default"]["trial_number"] is None
    assert result[backbone]["v2"]["metric"] == 0.6


def test_disagreement_between_mlflow_and_study(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    backbone = "split"
    name, experiment_id = new_experiment(mlflow_client, "split")
    first, second = Trial(backbone, "v1", 0, 0.6), Trial(backbone, "v1", 1, 0.7)
    run_ids = [log_run(mlflow_client, experiment_id, t) for t in (first, second)]
    # The study recorded other values (say, a rerun of the trials): it prefers the first trial.
    write_study(tmp_path, backbone, "v1", [
        {"value": 0.9, "trial_key": first.trial_key, "run_id": run_ids[0]},
        {"value": 0.1, "trial_key": second.trial_key, "run_id": run_ids[1]},
    ])  # fmt: skip
    info = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})[backbone]
    assert (info["source"], info["trial_id"], info["run_id"]) == ("mlflow", second.trial_key, run_ids[1])
    assert info["disagreements"] == [
        {"source": "study", "trial_id": first.trial_key, "metric": 0.9, "run_id": run_ids[0]}
    ]
    (message,) = [m for m in warnings_from(caplog) if "disagree" in m]
    assert "mlflow=" + second.trial_key[:12] in message and "study=" + first.trial_key[:12] in message

    # Without MLflow, the study answers (and the disk has nothing to disagree with).
    assert retrieve([backbone], tmp_path)[backbone]["trial_id"] == first.trial_key


def test_each_partition_is_answered_by_its_highest_priority_source(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow only knows v1; the study knows v1 and v2. Per variant, v2 comes from the study; overall, MLflow
    answers (it has an eligible trial) and the study's better v2 trial is reported as a disagreement."""
    caplog.set_level(logging.WARNING)
    backbone = "partial"
    name, experiment_id = new_experiment(mlflow_client, "partial")
    v1, v2 = Trial(backbone, "v1", 0, 0.6), Trial(backbone, "v2", 0, 0.7)
    v1_run = log_run(mlflow_client, experiment_id, v1)
    write_studies(tmp_path, [v1, v2], {v1.trial_key: v1_run})
    experiments = {backbone: {"name": name}}

    per_variant = retrieve([backbone], tmp_path, client=mlflow_client, experiments=experiments, scope="per_variant")[
        backbone
    ]
    assert (per_variant["v1"]["source"], per_variant["v1"]["trial_id"], per_variant["v1"]["run_id"]) == (
        "mlflow",
        v1.trial_key,
        v1_run,
    )
    assert (per_variant["v2"]["source"], per_variant["v2"]["trial_id"], per_variant["v2"]["run_id"]) == (
        "study",
        v2.trial_key,
        None,
    )
    assert per_variant["v1"]["sources_agree"] and per_variant["v2"]["sources_agree"]
    assert per_variant["v2"]["candidates"]["mlflow"]["available"] is True
    assert per_variant["v2"]["candidates"]["mlflow"]["eligible"] == 0
    assert not warnings_from(caplog)

    overall = retrieve([backbone], tmp_path, client=mlflow_client, experiments=experiments)[backbone]
    assert (overall["source"], overall["trial_id"]) == ("mlflow", v1.trial_key)
    assert overall["disagreements"] == [{"source": "study", "trial_id": v2.trial_key, "metric": 0.7, "run_id": None}]
    assert len([m for m in warnings_from(caplog) if "disagree" in m]) == 1


def test_a_server_that_never_answers_is_a_fallback_within_the_timeout(
    demo_sweeps: DemoSweeps, caplog: pytest.LogCaptureFixture
) -> None:
    """A listening socket that accepts connections and never replies (a hung server): the timeout is waited
    out once per retrieval, not once per backbone."""
    caplog.set_level(logging.WARNING)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        started = time.monotonic()
        result = _retrieve_demo(demo_sweeps, MlflowClient(tracking_uri=uri), mlflow_timeout_s=1)
        elapsed = time.monotonic() - started
        hung.settimeout(0.5)
        connections = 0
        with contextlib.suppress(TimeoutError):
            while True:
                hung.accept()[0].close()
                connections += 1
    assert connections == 1, "MLflow was probed again after it was found down"
    assert elapsed < 6, f"falling back took {elapsed:.1f}s with a 1 s timeout"
    assert {i["candidates"]["mlflow"]["error"] for i in result.values()} == {
        result["tiny_transformer"]["candidates"]["mlflow"]["error"]
    }
    assert [i["source"] for i in result.values()] == ["study", "study"]
    assert any("MLflow is unavailable" in m and uri in m for m in warnings_from(caplog))


# ====================================================================================== errors


def test_unknown_selection_scope(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"selection_scope must be one of \('overall', 'per_variant'\), got 'per_backbone'"
    ):
        retrieve(["bilstm"], tmp_path, scope="per_backbone")


def test_unsafe_backbone_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backbone"):
        retrieve(["bil'stm"], tmp_path)


def test_study_in_the_wrong_direction(tmp_path: Path) -> None:
    write_study(tmp_path, "wrongway", "v1", [{"value": 0.5, "trial_key": hexkey("w")}], direction="minimize")
    with pytest.raises(StudyDirectionError) as caught:
        retrieve(["wrongway"], tmp_path)
    message = str(caught.value)
    assert "wrongway_v1" in message and "minimize" in message and "'maximize'" in message
    assert str(tmp_path / "wrongway") in message
    # The same study is fine for a minimizing objective.
    assert retrieve(["wrongway"], tmp_path, direction="minimize")["wrongway"]["source"] == "study"


@pytest.mark.parametrize("scope", SELECTION_SCOPES)
def test_no_trials_anywhere_names_the_places_looked_at(
    mlflow_client: MlflowClient, mlflow_server: str, tmp_path: Path, scope: str
) -> None:
    missing = unique_name("absent")
    with pytest.raises(NoTrialsFoundError) as caught:
        retrieve(["ghost"], tmp_path, client=mlflow_client, experiments={"ghost": {"name": missing}}, scope=scope)
    message = str(caught.value)
    assert "'ghost'" in message
    assert f"mlflow: 0 eligible; looked at {mlflow_server} experiment" in message and missing in message
    assert f"study: unavailable (no Optuna study storage found under {tmp_path / 'ghost'})" in message
    assert f"{tmp_path / 'ghost'}/study-*/{contract.STUDY_DB_FILE}" in message
    assert f"disk: unavailable (no HPO folder {tmp_path / 'ghost'})" in message
    assert f"{tmp_path / 'ghost'}/study-*/trial-*" in message


def test_no_eligible_trial_lists_what_was_excluded(tmp_path: Path) -> None:
    write_folder(tmp_path, Trial("broken", "v1", 0, 0.5), metrics_text="{")
    with pytest.raises(
        NoTrialsFoundError, match=r"disk: 0 eligible; looked at .*ineligible \{'unreadable_metrics_file': 1\}"
    ) as caught:
        retrieve(["broken"], tmp_path)
    assert "mlflow: unavailable (no MLflow tracking URI configured)" in str(caught.value)


def test_one_backbone_without_trials_fails_the_whole_request(tmp_path: Path) -> None:
    write_folder(tmp_path, Trial("present", "v1", 0, 0.5))
    assert retrieve(["present"], tmp_path)["present"]["source"] == "disk"
    with pytest.raises(NoTrialsFoundError, match="'absent'"):
        retrieve(["present", "absent"], tmp_path)


def test_duplicate_trial_ids_pick_deterministically_by_run_id(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    """The same trial logged twice (same trial_key_hash, number and metric): the smaller run id wins, always."""
    backbone = "dupes"
    name, experiment_id = new_experiment(mlflow_client, "dupes")
    trial = Trial(backbone, "v1", 0, 0.8)
    run_ids = sorted(log_run(mlflow_client, experiment_id, trial) for _ in range(2))
    result = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})
    assert result[backbone]["run_id"] == run_ids[0]
    assert result[backbone]["candidates"]["mlflow"]["eligible"] == 2


def test_conflicting_variant_tag_and_study_name_follow_the_tag(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    backbone = "conflict"
    name, experiment_id = new_experiment(mlflow_client, "conflict")
    log_run(
        mlflow_client, experiment_id, Trial(backbone, "v1", 0, 0.8), tags={contract.TAG_STUDY_NAME: f"{backbone}_v7"}
    )
    result = retrieve(
        [backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}}, scope="per_variant"
    )
    assert list(result[backbone]) == ["v1"]


def test_an_empty_experiment_is_a_fallback_not_an_error(mlflow_client: MlflowClient, tmp_path: Path) -> None:
    backbone = "empty"
    name, _ = new_experiment(mlflow_client, "empty")
    write_folder(tmp_path, Trial(backbone, "v1", 0, 0.5))
    result = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})
    assert result[backbone]["source"] == "disk"
    assert result[backbone]["candidates"]["mlflow"] == {
        **result[backbone]["candidates"]["mlflow"],
        "available": True,
        "eligible": 0,
        "pick": None,
    }


# ============================================================================ hand-built: unsafe identities

ZERO_WIDTH_SPACE = "\u200b"
ARABIC_INDIC_THREE = "\u0663"


def test_records_with_unsafe_identity_values_are_excluded_in_every_source(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A zero-width space, an Arabic-Indic digit (which ``\\d`` matches), a quote or 97 characters in an identity
    field: each such record would win (0.99) and then break key building; instead it is excluded, counted under
    ``unsafe_value:<field>``, and the safe trial is picked and keyed."""
    caplog.set_level(logging.WARNING)
    backbone = "lookalike"
    hpo_dir = tmp_path / "hpo"
    name, experiment_id = new_experiment(mlflow_client, "lookalike")
    good = Trial(backbone, "v1", 0, 0.5)
    bad = [Trial(backbone, "v1", n, 0.99) for n in range(1, 20)]
    good_run = log_run(mlflow_client, experiment_id, good)

    # --- MLflow: one unsafe tag per run
    log_run(
        mlflow_client, experiment_id, bad[0], tags={contract.TAG_TRIAL_KEY_HASH: bad[0].trial_key + ZERO_WIDTH_SPACE}
    )
    log_run(
        mlflow_client,
        experiment_id,
        bad[1],
        tags={contract.TAG_TRIAL_KEY_HASH: bad[1].trial_key[:-1] + ARABIC_INDIC_THREE},
    )
    log_run(mlflow_client, experiment_id, bad[2], tags={contract.TAG_STUDY_KEY_HASH: "study'key"})
    log_run(mlflow_client, experiment_id, bad[3], tags={contract.TAG_VARIANT: f"v{ARABIC_INDIC_THREE}"})
    log_run(mlflow_client, experiment_id, bad[4], tags={contract.TAG_TRIAL_KEY_HASH: "f" * 97})
    # The study-name fallback takes ASCII digits only: "…_v٣" gives no variant, so "default" (a safe name).
    fallback_run = log_run(
        mlflow_client,
        experiment_id,
        Trial(backbone, "v1", 50, 0.1),
        tags={contract.TAG_VARIANT: None, contract.TAG_STUDY_NAME: f"{backbone}_v{ARABIC_INDIC_THREE}"},
    )

    # --- Optuna: an unsafe trial attribute, an unsafe cross-reference, and a study whose own variant is unsafe
    write_study(hpo_dir, backbone, "v1", [
        {"value": 0.5, "trial_key": good.trial_key, "run_id": good_run},
        {"value": 0.99, "trial_key": bad[5].trial_key + ZERO_WIDTH_SPACE},
        {"value": 0.99, "trial_key": bad[6].trial_key, "run_id": "run'6"},
    ])  # fmt: skip
    write_study(hpo_dir, backbone, "v2", [{"value": 0.99, "trial_key": bad[7].trial_key}, {"value": 0.99, "trial_key": bad[8].trial_key}],
                attrs={contract.STUDY_ATTR_VARIANT: f"v2{ZERO_WIDTH_SPACE}"})  # fmt: skip

    # --- Trial folders: one unsafe trial_meta.json field per folder
    write_folder(hpo_dir, good, run_id=good_run)
    write_folder(hpo_dir, bad[9], meta={"trial_key_hash": bad[9].trial_key + ZERO_WIDTH_SPACE})
    write_folder(hpo_dir, bad[10], meta={"study_key_hash": 'study"key'})
    quoted_variant = write_folder(hpo_dir, bad[11], meta={"variant": "v'1"})
    write_folder(hpo_dir, bad[12], meta={"mlflow_run_id": f"{ARABIC_INDIC_THREE}" * 32})

    result = retrieve([backbone], hpo_dir, client=mlflow_client, experiments={backbone: {"name": name}})
    info = result[backbone]
    assert (info["trial_id"], info["metric"], info["source"], info["run_id"]) == (
        good.trial_key,
        0.5,
        "mlflow",
        good_run,
    )
    assert info["sources_agree"] is True
    key = key_for_trial(info, DATA_CONFIG, BENCHMARK_CONFIG)  # the pick builds a key
    assert key.split(":")[2] == good_run
    candidates = info["candidates"]
    assert candidates["mlflow"]["ineligible"] == {
        f"unsafe_value:{contract.TAG_STUDY_KEY_HASH}": 1,
        f"unsafe_value:{contract.TAG_TRIAL_KEY_HASH}": 3,
        f"unsafe_value:{contract.TAG_VARIANT}": 1,
    }
    assert candidates["mlflow"]["eligible"] == 2  # the good run and the study-name fallback run
    assert candidates["study"]["ineligible"] == {
        f"unsafe_value:{contract.ATTR_MLFLOW_RUN_ID}": 1,
        f"unsafe_value:{contract.ATTR_TRIAL_KEY_HASH}": 1,
        f"unsafe_value:{contract.STUDY_ATTR_VARIANT}": 2,
    }
    assert candidates["disk"]["ineligible"] == {
        "unsafe_value:mlflow_run_id": 1,
        "unsafe_value:study_key_hash": 1,
        "unsafe_value:trial_key_hash": 1,
        "unsafe_value:variant": 1,
    }
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(quoted_variant / contract.TRIAL_META_FILE) in m and "variant" in m for m in logged)
    assert sum("not a safe identity" in m for m in logged) == 12

    per_variant = retrieve(
        [backbone], hpo_dir, client=mlflow_client, experiments={backbone: {"name": name}}, scope="per_variant"
    )[backbone]
    assert sorted(per_variant) == ["default", "v1"], "no partition for an unsafe variant"
    assert per_variant["default"]["run_id"] == fallback_run
    for partition in per_variant.values():
        key_for_trial(partition, DATA_CONFIG, BENCHMARK_CONFIG)


# ============================================================================ hand-built: configured storages


def test_a_mistyped_sqlite_storage_is_unavailable_and_never_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    backbone = "typo"
    hpo_dir, shared = tmp_path / "hpo", tmp_path / "shared"
    trial = Trial(backbone, "v1", 0, 0.7)
    # The team's real storage lives outside the HPO folder; the config misspells its name.
    real = write_study(shared, backbone, "v1", [{"value": 0.7, "trial_key": trial.trial_key}])
    mistyped = real.with_name("studdy.db")
    write_folder(hpo_dir, trial)

    info = retrieve([backbone], hpo_dir, optuna_storages=[f"sqlite:///{mistyped}"])[backbone]
    assert not mistyped.exists(), "the mistyped path was created as an empty database"
    study = info["candidates"]["study"]
    assert study["available"] is False and study["eligible"] == 0
    assert study["error"] == f"sqlite file {mistyped} of Optuna storage sqlite:///{mistyped} does not exist"
    assert study["ineligible"] == {"missing_storage": 1}
    assert info["source"] == "disk" and info["trial_id"] == trial.trial_key
    (warning,) = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "does not exist" in r.getMessage()
    ]
    assert str(mistyped) in warning and "not opened" in warning

    # A relative path is resolved against the working directory, as SQLAlchemy does, and named absolutely.
    caplog.clear()
    relative = retrieve([backbone], hpo_dir, optuna_storages=["sqlite:///no/such/optuna.db"])[backbone]
    assert str(Path("no/such/optuna.db").absolute()) in relative["candidates"]["study"]["error"]
    assert not Path("no").exists()

    # With the right path, and the mistyped one beside it, the study answers and the missing file is still reported.
    both = retrieve([backbone], hpo_dir, optuna_storages=[f"sqlite:///{real}", f"sqlite:///{mistyped}"])[backbone]
    assert both["source"] == "study" and both["candidates"]["study"]["available"] is True
    assert str(mistyped) in both["candidates"]["study"]["error"]
    assert both["candidates"]["study"]["ineligible"] == {"missing_storage": 1}
    assert not mistyped.exists()


# ============================================================================ hand-built: conflicting records


def _two_runs_of_one_trial(client: MlflowClient, experiment_id: str, trial: Trial) -> tuple[str, str]:
    """Two RUNNING runs tagged for ``trial``: ``(original, duplicate)`` with the duplicate's run id the *smaller*
    one, so that "smallest run id" alone would pick the duplicate. Nothing is logged yet."""
    first, second = (client.create_run(experiment_id, tags=contract_tags(trial)).info.run_id for _ in range(2))
    duplicate, original = sorted((first, second))
    return original, duplicate


def _finish(client: MlflowClient, run_id: str, trial: Trial, value: float, *, model_dir: Path | None = None) -> None:
    client.log_batch(
        run_id,
        metrics=[Metric(METRIC, value, 0, 0)],
        params=[Param(k, str(v)) for k, v in sorted(trial.hyperparameters.items())],
    )
    if model_dir is not None:
        client.log_artifacts(run_id, str(model_dir), contract.MODEL_ARTIFACT_DIR)
    client.set_terminated(run_id, "FINISHED")


def _model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model-files"
    folder.mkdir(exist_ok=True)
    (folder / contract.ONNX_FILE).write_bytes(b"an ONNX model would be here")
    return folder


def test_a_duplicate_run_without_a_model_never_wins_and_the_key_keeps_the_original_run(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: a second FINISHED run carries the best trial's trial_key_hash with 0.99 and no model.
    Before the fix it was chosen, silently, and its run id made a new benchmark key."""
    caplog.set_level(logging.WARNING)
    from benchmark_pipeline.defs.checks import sources_agree_result

    backbone = "dupmodel"
    name, experiment_id = new_experiment(mlflow_client, "dupmodel")
    experiments = {backbone: {"name": name}}
    best, other = Trial(backbone, "v1", 0, 0.8), Trial(backbone, "v1", 1, 0.7)
    original, duplicate = _two_runs_of_one_trial(mlflow_client, experiment_id, best)
    _finish(mlflow_client, original, best, 0.8, model_dir=_model_dir(tmp_path))
    log_run(mlflow_client, experiment_id, other)

    before = retrieve([backbone], tmp_path, client=mlflow_client, experiments=experiments)[backbone]
    key_before = key_for_trial(before, DATA_CONFIG, BENCHMARK_CONFIG)
    assert before["conflicts"] == [] and sources_agree_result("best_trial", before).passed

    _finish(mlflow_client, duplicate, best, 0.99)  # the duplicate: better value, no model
    caplog.clear()
    after = retrieve([backbone], tmp_path, client=mlflow_client, experiments=experiments)[backbone]
    assert (after["trial_id"], after["run_id"], after["metric"]) == (best.trial_key, original, 0.8)
    assert key_for_trial(after, DATA_CONFIG, BENCHMARK_CONFIG) == key_before
    assert after["candidates"]["mlflow"]["eligible"] == 3, (
        "the duplicate is still an eligible record, it just never counts"
    )
    assert after["candidates"]["mlflow"]["pick"]["run_id"] == original
    assert after["conflicts"] == [
        {
            "kind": "duplicate_runs",
            "source": "mlflow",
            "trial_id": best.trial_key,
            "variant": "v1",
            "run_ids": [duplicate, original],
            "values": [0.99, 0.8],
            "with_model": [False, True],
            "counted_run_id": original,
            "counted_value": 0.8,
            "rule": "the only run(s) with model artifacts",
        }
    ]
    (warning,) = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "Conflicting records" in r.getMessage()
    ]
    assert duplicate in warning and original in warning and "0.99" in warning and f"counting run {original}" in warning

    check = sources_agree_result("best_trial", after)
    assert check.passed is False and check.severity.value == "WARN"
    assert duplicate in check.description and f"run {original} counts" in check.description
    assert check.metadata["conflicts"].value == after["conflicts"]
    assert format_selection_table({backbone: after}).splitlines()[-1].endswith("only mlflow; 1 conflicting record(s)")


def test_the_run_the_study_cross_references_counts_and_differing_values_are_reported(
    mlflow_client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither run has a model: the Optuna trial's and trial_meta.json's ``mlflow_run_id`` decide. The chosen
    trial's metrics.json then says another value: a second conflict (value_mismatch), the pick stands."""
    caplog.set_level(logging.WARNING)
    backbone = "dupxref"
    name, experiment_id = new_experiment(mlflow_client, "dupxref")
    best = Trial(backbone, "v1", 0, 0.8)
    original, duplicate = _two_runs_of_one_trial(mlflow_client, experiment_id, best)
    _finish(mlflow_client, original, best, 0.8)
    _finish(mlflow_client, duplicate, best, 0.99)
    write_study(
        tmp_path,
        backbone,
        "v1",
        [{"value": 0.8, "trial_key": best.trial_key, "run_id": original, "params": best.hyperparameters}],
    )
    folder = write_folder(tmp_path, best, run_id=original, metrics_text=json.dumps({METRIC: 0.81}))

    for scope in SELECTION_SCOPES:
        result = retrieve(
            [backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}}, scope=scope
        )[backbone]
        info = result if scope == "overall" else result["v1"]
        assert (info["source"], info["run_id"], info["metric"]) == ("mlflow", original, 0.8)
        duplicates, mismatch = info["conflicts"]
        assert (duplicates["kind"], duplicates["counted_run_id"], duplicates["rule"]) == (
            "duplicate_runs",
            original,
            "cross-referenced by the Optuna study or trial_meta.json",
        )
        assert duplicates["with_model"] == [False, False]
        assert mismatch == {
            "kind": "value_mismatch",
            "source": "disk",
            "trial_id": best.trial_key,
            "variant": "v1",
            "run_ids": [original],
            "values": [0.81],
            "locations": [str(folder)],
            "counted_source": "mlflow",
            "counted_value": 0.8,
        }
        assert info["sources_agree"] is True, "every source picks the same trial; the values are what conflict"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no model artifacts" in m and original in m for m in messages), (
        "a counted run without a model is never silent"
    )
    assert any("Conflicting records for dupxref" in m and str(folder) in m and "0.81" in m for m in messages)

    # Without MLflow the study answers; its value agrees with nothing but the folder's: still reported.
    without = retrieve([backbone], tmp_path)[backbone]
    assert without["source"] == "study"
    assert [(c["kind"], c["source"], c["values"]) for c in without["conflicts"]] == [("value_mismatch", "disk", [0.81])]


def test_duplicate_runs_without_model_or_cross_reference_count_the_smallest_run_id(
    mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    backbone = "dupplain"
    name, experiment_id = new_experiment(mlflow_client, "dupplain")
    trial = Trial(backbone, "v1", 0, 0.8)
    larger, smaller = _two_runs_of_one_trial(mlflow_client, experiment_id, trial)
    _finish(mlflow_client, larger, trial, 0.9)
    _finish(mlflow_client, smaller, trial, 0.8)
    info = retrieve([backbone], tmp_path, client=mlflow_client, experiments={backbone: {"name": name}})[backbone]
    assert (info["run_id"], info["metric"]) == (smaller, 0.8), "the better value of the other run does not decide"
    (conflict,) = info["conflicts"]
    assert (conflict["counted_run_id"], conflict["rule"], conflict["values"]) == (
        smaller,
        "smallest run id",
        [0.8, 0.9],
    )


# ============================================================================ availability, as trial_info says it


def test_a_selection_made_without_mlflow_says_so(demo_sweeps: DemoSweeps, mlflow_client: MlflowClient) -> None:
    from benchmark_pipeline.defs.checks import sources_agree_result

    consulted = _retrieve_demo(demo_sweeps, mlflow_client)
    for info in consulted.values():
        assert (info["mlflow_consulted"], info["mlflow_not_consulted_reason"], info["conflicts"]) == (True, None, [])
        assert sources_agree_result("best_trial", info).passed

    dead_uri = f"http://127.0.0.1:{free_port()}"
    for client, reason in [
        (None, "no MLflow tracking URI configured"),
        (MlflowClient(tracking_uri=dead_uri), f"MLflow server {dead_uri} is unreachable"),
    ]:
        result = _retrieve_demo(demo_sweeps, client)
        for backbone, info in result.items():
            assert info["trial_id"] == consulted[backbone]["trial_id"] and info["source"] == "study"
            assert info["sources_agree"] is True  # study and disk agree ...
            assert info["mlflow_consulted"] is False and reason in info["mlflow_not_consulted_reason"]
            check = sources_agree_result("best_trial", info)  # ... but the check does not pass
            assert check.passed is False and check.severity.value == "WARN"
            assert check.description.startswith("MLflow not consulted (") and reason in check.description

"""Single-run backfills (``BackfillPolicy.single_run()``) on a real Dagster instance, the real MLflow server and
real sweeps: N partitions in one run and one step per asset, each partition's own metadata, checks and data
version, the sensor reading each partition's key afterwards, and the staleness Dagster's UI shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._utils.test.data_versions import get_stale_status_resolver  # what the UI's staleness runs on

from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.config import load_config
from benchmark_pipeline.defs.benchmark_assets import benchmark_result, benchmark_result_per_variant
from benchmark_pipeline.defs.partition_runs import range_data_version
from benchmark_pipeline.defs.resources import MlflowResource
from benchmark_pipeline.defs.selection_assets import best_trial, best_trial_per_variant
from benchmark_pipeline.defs.sensors import benchmark_sensor
from benchmark_pipeline_tests.mlflow_server import benchmark_runs
from benchmark_pipeline_tests.ports import free_port

DATA_VERSION_TAG = "dagster/data_version"
ALL_BACKBONES = {
    ASSET_PARTITION_RANGE_START_TAG: "tiny_transformer",
    ASSET_PARTITION_RANGE_END_TAG: "bilstm",
}  # registration order
ALL_PAIRS = {ASSET_PARTITION_RANGE_START_TAG: "tiny_transformer|v1", ASSET_PARTITION_RANGE_END_TAG: "bilstm|v2"}


def _materializations(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dg.AssetMaterialization]:
    events = [e.materialization for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    by_partition = {str(m.partition): m for m in events}
    assert len(by_partition) == len(events), "one materialization per partition"
    return by_partition


def _steps_started(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]


def _checks(result: dg.ExecuteInProcessResult, check_name: str) -> dict[str, Any]:
    return {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == check_name}


def test_a_backfill_of_every_backbone_is_one_run_and_each_partition_keeps_its_own_record(
    dagster_setup: dict[str, Any],
) -> None:
    config, resources, instance, client = (dagster_setup[k] for k in ("config", "resources", "instance", "client"))

    selected = dg.materialize([best_trial], instance=instance, resources=resources, tags=ALL_BACKBONES)
    assert selected.success and _steps_started(selected) == ["best_trial"]  # one step: one retrieval for both backbones
    infos = selected.output_for_node("best_trial")
    assert set(infos) == {"tiny_transformer", "bilstm"}
    keys = {b: key_for_trial(info, config.data_config, config.benchmark_config) for b, info in infos.items()}
    assert len(set(keys.values())) == 2
    by_partition = _materializations(selected, "best_trial")
    for backbone, materialization in by_partition.items():
        assert materialization.metadata["benchmark_key"].value == keys[backbone]
        assert materialization.metadata["trial_id"].value == infos[backbone]["trial_id"]
        assert f"{backbone}" in materialization.metadata["table"].value and "retrieval" in materialization.metadata
        # Dagster 1.13 records one data version per step: the digest of the range's keys.
        assert materialization.tags[DATA_VERSION_TAG] == range_data_version(keys).value
    checks = _checks(selected, "sources_agree")
    assert set(checks) == {"tiny_transformer", "bilstm"}
    for backbone, evaluation in checks.items():
        assert evaluation.passed and evaluation.metadata["source"].value == "mlflow"
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("best_trial"), asset_partitions=[backbone]), limit=1
        ).records[0]
        assert evaluation.target_materialization_data.storage_id == record.storage_id

    # The sensor reads each partition's own key from its materialization.
    tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert {(r.partition_key, r.run_key) for r in tick.run_requests} == {(b, f"{k}#attempt-0") for b, k in keys.items()}

    # Both benchmarks in one run, fed by the selection's stored {partition: trial} (the IO manager's files).
    benchmarked = dg.materialize(
        [best_trial, benchmark_result],
        selection=[benchmark_result],
        instance=instance,
        resources=resources,
        tags=ALL_BACKBONES,
    )
    assert benchmarked.success and _steps_started(benchmarked) == ["benchmark_result"]
    results = _materializations(benchmarked, "benchmark_result")
    assert {b: m.metadata["benchmark_key"].value for b, m in results.items()} == keys
    assert {m.metadata["status"].value for m in results.values()} == {"benchmarked"}
    runs = benchmark_runs(client, config.mlflow.benchmark_experiment)
    assert sorted(r.data.tags["benchmark_key"] for r in runs) == sorted(keys.values())
    assert {b: m.metadata["mlflow_run_id"].value for b, m in results.items()} == {
        r.data.tags["benchmark_key"].split(":")[0]: r.info.run_id for r in runs
    }
    assert {p: e.passed for p, e in _checks(benchmarked, "provider_matches_config").items()} == {
        "tiny_transformer": True,
        "bilstm": True,
    }
    tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert (
        isinstance(tick, dg.SkipReason) and "across 2 partitions: already benchmarked: bilstm (key" in tick.skip_message
    )
    assert "tiny_transformer (key" in tick.skip_message

    staleness = get_stale_status_resolver(instance, [best_trial, benchmark_result])
    assert {b: staleness.get_status(dg.AssetKey("benchmark_result"), b) for b in keys} == dict.fromkeys(
        keys, StaleStatus.FRESH
    )

    # A second backfill of both stages benchmarks nothing and leaves every partition fresh.
    again = dg.materialize([best_trial, benchmark_result], instance=instance, resources=resources, tags=ALL_BACKBONES)
    assert again.success and sorted(_steps_started(again)) == ["benchmark_result", "best_trial"]
    assert {m.metadata["status"].value for m in _materializations(again, "benchmark_result").values()} == {
        "skipped: already benchmarked"
    }
    assert len(benchmark_runs(client, config.mlflow.benchmark_experiment)) == 2
    staleness = get_stale_status_resolver(instance, [best_trial, benchmark_result])
    assert {staleness.get_status(dg.AssetKey("benchmark_result"), b) for b in keys} == {StaleStatus.FRESH}

    # One partition alone still works, and its data version is its own benchmark key.
    single = dg.materialize(
        [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    selection = _materializations(single, "best_trial")["bilstm"]
    assert selection.tags[DATA_VERSION_TAG] == keys["bilstm"] == selection.metadata["benchmark_key"].value
    benchmark = _materializations(single, "benchmark_result")["bilstm"]
    assert benchmark.metadata["status"].value == "skipped: already benchmarked"
    assert benchmark.tags[DATA_VERSION_TAG] == keys["bilstm"]
    # Built from that selection: Dagster's provenance points at its materialization (what staleness compares).
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("best_trial"), asset_partitions=["bilstm"]), limit=1
    ).records[0]
    assert latest.run_id == single.run_id and benchmark.tags["dagster/input_event_pointer/best_trial"] == str(
        latest.storage_id
    )
    assert single.output_for_node("benchmark_result")["benchmark_key"] == keys["bilstm"]
    assert {c.partition for c in single.get_asset_check_evaluations()} == {"bilstm"}
    assert len(instance.get_runs()) == 4  # every materialize call above was one run

    # A run that benchmarks nothing loads neither torch nor onnxruntime (nor matplotlib): a fresh process.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            _NOTHING_TO_BENCHMARK,
            resources["settings"].config_path,
            resources["mlflow"].tracking_uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report == {"statuses": ["skipped: already benchmarked"] * 2, "loaded": []}, report


_NOTHING_TO_BENCHMARK = """
import json, sys
import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from benchmark_pipeline.defs.benchmark_assets import benchmark_result
from benchmark_pipeline.defs.io_managers import JsonIOManager, default_io_base_path
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.defs.selection_assets import best_trial

from benchmark_pipeline.config import load_config
resources = {"settings": PipelineSettings(config_path=sys.argv[1]), "mlflow": MlflowResource(tracking_uri=sys.argv[2]),
             "io_manager": JsonIOManager(base_path=default_io_base_path(load_config(sys.argv[1])))}
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions("backbone", ["tiny_transformer", "bilstm"])
    tags = {ASSET_PARTITION_RANGE_START_TAG: "tiny_transformer", ASSET_PARTITION_RANGE_END_TAG: "bilstm"}
    result = dg.materialize([best_trial, benchmark_result], instance=instance, resources=resources, tags=tags)
    statuses = [e.materialization.metadata["status"].value for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("benchmark_result")]
print(json.dumps({"statuses": statuses, "loaded": sorted(m for m in ("torch", "onnxruntime", "matplotlib") if m in sys.modules)}))
"""


def test_a_per_variant_backfill_benchmarks_only_the_missing_keys(dagster_setup: dict[str, Any]) -> None:
    config, resources, instance, client = (dagster_setup[k] for k in ("config", "resources", "instance", "client"))
    overall = dg.materialize([best_trial, benchmark_result], instance=instance, resources=resources, tags=ALL_BACKBONES)
    overall_keys = {m.metadata["benchmark_key"].value for m in _materializations(overall, "benchmark_result").values()}

    pairs = dg.materialize(
        [best_trial_per_variant, benchmark_result_per_variant], instance=instance, resources=resources, tags=ALL_PAIRS
    )
    assert pairs.success and sorted(_steps_started(pairs)) == ["benchmark_result_per_variant", "best_trial_per_variant"]
    infos = pairs.output_for_node("best_trial_per_variant")
    assert set(infos) == {"tiny_transformer|v1", "tiny_transformer|v2", "bilstm|v1", "bilstm|v2"}
    assert {pair: (info["backbone"], info["variant"]) for pair, info in infos.items()} == {
        p: tuple(p.split("|")) for p in infos
    }
    selections = _materializations(pairs, "best_trial_per_variant")
    results = _materializations(pairs, "benchmark_result_per_variant")
    keys = {pair: key_for_trial(info, config.data_config, config.benchmark_config) for pair, info in infos.items()}
    assert {p: m.metadata["benchmark_key"].value for p, m in selections.items()} == keys
    assert {p: m.metadata["benchmark_key"].value for p, m in results.items()} == keys
    # The overall best trial of each backbone is also the best of its variant: those two were reused.
    statuses = {p: m.metadata["status"].value for p, m in results.items()}
    assert {p for p, s in statuses.items() if s.startswith("skipped")} == {
        p for p, k in keys.items() if k in overall_keys
    }
    assert len(overall_keys & set(keys.values())) == 2
    assert len(benchmark_runs(client, config.mlflow.benchmark_experiment)) == 4
    assert set(_checks(pairs, "sources_agree")) == set(keys) == set(_checks(pairs, "provider_matches_config"))

    tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(tick, dg.SkipReason) and "across 6 partitions: already benchmarked:" in tick.skip_message
    assert all(
        f"{partition} (key" in tick.skip_message
        for partition in (
            "bilstm",
            "tiny_transformer",
            *(f"{b}|{v}" for b in ("bilstm", "tiny_transformer") for v in ("v1", "v2")),
        )
    )


def test_the_ui_shows_a_benchmark_out_of_date_exactly_when_its_key_changed(
    dagster_setup: dict[str, Any], tmp_path: Path
) -> None:
    """One-partition runs (the UI, the sensor's, the schedules'): best_trial's data version is the benchmark key."""
    resources, instance = dagster_setup["resources"], dagster_setup["instance"]
    assets = [best_trial, benchmark_result]
    dg.materialize(assets, partition_key="bilstm", instance=instance, resources=resources)
    assert (
        get_stale_status_resolver(instance, assets).get_status(dg.AssetKey("benchmark_result"), "bilstm")
        == StaleStatus.FRESH
    )

    # Selecting again finds the same trial: same key, same version, the benchmark stays fresh.
    dg.materialize([best_trial], partition_key="bilstm", instance=instance, resources=resources)
    assert (
        get_stale_status_resolver(instance, assets).get_status(dg.AssetKey("benchmark_result"), "bilstm")
        == StaleStatus.FRESH
    )

    # A new benchmark config gives the same trial a new key: the benchmark is out of date until it is rebuilt.
    config_path = Path(resources["settings"].config_path)
    raw = yaml.safe_load(config_path.read_text())
    raw["benchmark_config"]["iterations"] += 1
    config_path.write_text(yaml.safe_dump(raw))
    changed = dg.materialize([best_trial], partition_key="bilstm", instance=instance, resources=resources)
    new_key = _materializations(changed, "best_trial")["bilstm"].tags[DATA_VERSION_TAG]
    config = load_config(config_path, env={})
    assert new_key == key_for_trial(changed.output_for_node("best_trial"), config.data_config, config.benchmark_config)
    staleness = get_stale_status_resolver(instance, assets)
    assert staleness.get_status(dg.AssetKey("benchmark_result"), "bilstm") == StaleStatus.STALE
    assert staleness.get_status(dg.AssetKey("benchmark_result"), "tiny_transformer") == StaleStatus.MISSING
    rebuilt = dg.materialize(
        assets, selection=[benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    assert _materializations(rebuilt, "benchmark_result")["bilstm"].metadata["status"].value == "benchmarked"
    assert (
        get_stale_status_resolver(instance, assets).get_status(dg.AssetKey("benchmark_result"), "bilstm")
        == StaleStatus.FRESH
    )


def test_with_mlflow_down_a_backfill_of_benchmarked_keys_reports_them_from_the_disk_cache(
    dagster_setup: dict[str, Any],
) -> None:
    """A real outage: the MLflow resource points at a port nothing listens on."""
    resources, instance = dagster_setup["resources"], dagster_setup["instance"]
    first = dg.materialize([best_trial, benchmark_result], instance=instance, resources=resources, tags=ALL_BACKBONES)
    keys = {b: m.metadata["benchmark_key"].value for b, m in _materializations(first, "benchmark_result").items()}
    down = {**resources, "mlflow": MlflowResource(tracking_uri=f"http://127.0.0.1:{free_port()}")}
    again = dg.materialize(
        [best_trial, benchmark_result],
        selection=[benchmark_result],
        instance=instance,
        resources=down,
        tags=ALL_BACKBONES,
    )
    assert again.success
    results = _materializations(again, "benchmark_result")
    assert {b: m.metadata["benchmark_key"].value for b, m in results.items()} == keys
    assert {m.metadata["status"].value for m in results.values()} == {"skipped: already benchmarked"}
    assert {b: m.metadata["mlflow_run_id"].value for b, m in results.items()} == {
        b: m.metadata["mlflow_run_id"].value for b, m in _materializations(first, "benchmark_result").items()
    }

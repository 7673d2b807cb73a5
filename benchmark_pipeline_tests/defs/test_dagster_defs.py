"""The Dagster layer on a real (ephemeral) Dagster instance, against the real MLflow server and real sweeps."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.defs.benchmark_assets import benchmark_result, benchmark_result_per_variant
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY, multi_key
from benchmark_pipeline.defs.resources import MlflowResource
from benchmark_pipeline.defs.schedules import per_variant_selection_refresh_schedule, selection_refresh_schedule
from benchmark_pipeline.defs.selection_assets import best_trial, best_trial_per_variant
from benchmark_pipeline.defs.sensors import (
    MAX_BENCHMARK_ATTEMPTS,
    RUN_KEY_TAG,
    SENSOR_TAG,
    benchmark_sensor,
    partition_discovery_sensor,
)
from benchmark_pipeline_tests.mlflow_server import benchmark_runs
from benchmark_pipeline_tests.ports import free_port

TICK = datetime.datetime(2026, 11, 30, 2, 0, tzinfo=datetime.UTC)


def _materialization(result: dg.ExecuteInProcessResult, asset: str) -> dg.AssetMaterialization:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization


def test_definitions_load_and_list_the_pipeline_assets() -> None:
    from benchmark_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {
        "demo_dataset",
        "discovered_partitions",
        "hpo_sweep",
        "best_trial",
        "best_trial_per_variant",
        "benchmark_result",
        "benchmark_result_per_variant",
    } <= keys
    assert defs.resolve_sensor_def("benchmark_sensor") is not None
    assert defs.resolve_schedule_def("selection_refresh_schedule") is not None


def test_best_trial_then_benchmark_then_skip(dagster_setup: dict[str, Any]) -> None:
    config, resources, instance, client = (dagster_setup[k] for k in ("config", "resources", "instance", "client"))
    first = dg.materialize(
        [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    assert first.success
    selected = _materialization(first, "best_trial")
    assert selected.metadata["source"].value == "mlflow"
    assert selected.metadata["agreement"].value == "agree"
    retrieval_rows = selected.metadata["retrieval"].value.records
    assert [row.data["source"] for row in retrieval_rows] == ["mlflow", "study", "disk"]
    trial_info = first.output_for_node("best_trial")
    key = key_for_trial(trial_info, config.data_config, config.benchmark_config)
    assert selected.metadata["benchmark_key"].value == key

    benchmarked = _materialization(first, "benchmark_result")
    assert benchmarked.metadata["status"].value == "benchmarked"
    assert benchmarked.metadata["benchmark_key"].value == key
    latency = benchmarked.metadata["latency"].value.records
    assert {(r.data["backend"], r.data["batch_size"]) for r in latency} == {
        ("onnxruntime", 1),
        ("onnxruntime", 4),
        ("pytorch", 1),
        ("pytorch", 4),
    }
    assert benchmarked.metadata["providers_used"].value["onnxruntime"] == "CPUExecutionProvider"
    assert benchmarked.metadata["mlflow_run"].value.startswith(resources["mlflow"].tracking_uri)
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert checks["sources_agree"].passed and checks["provider_matches_config"].passed
    runs_after_first = benchmark_runs(client, config.mlflow.benchmark_experiment)
    assert [r.info.status for r in runs_after_first] == ["FINISHED"]
    assert runs_after_first[0].data.tags["benchmark_key"] == key

    second = dg.materialize(
        [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    skipped = _materialization(second, "benchmark_result")
    assert skipped.metadata["status"].value.startswith("skipped")
    assert skipped.metadata["mlflow_run_id"].value == runs_after_first[0].info.run_id
    assert len(benchmark_runs(client, config.mlflow.benchmark_experiment)) == 1


def test_per_variant_assets_and_a_pair_without_trials_fails_clearly(dagster_setup: dict[str, Any]) -> None:
    resources, instance = dagster_setup["resources"], dagster_setup["instance"]
    ok = dg.materialize(
        [best_trial_per_variant],
        partition_key=multi_key("tiny_transformer", "v2"),
        instance=instance,
        resources=resources,
    )
    assert ok.output_for_node("best_trial_per_variant")["variant"] == "v2"

    instance.add_dynamic_partitions("variant", ["v9"])
    failed = dg.materialize(
        [best_trial_per_variant],
        partition_key=multi_key("tiny_transformer", "v9"),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert "no eligible trial in variant 'v9'" in message and "['v1', 'v2']" in message


def test_benchmark_sensor_requests_only_missing_keys_and_retries_failures_within_bound(
    dagster_setup: dict[str, Any],
) -> None:
    config, resources, instance = dagster_setup["config"], dagster_setup["resources"], dagster_setup["instance"]
    assert isinstance(benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources)), dg.SkipReason)

    keys = {}
    for backbone in ("tiny_transformer", "bilstm"):
        result = dg.materialize([best_trial], partition_key=backbone, instance=instance, resources=resources)
        keys[backbone] = key_for_trial(
            result.output_for_node("best_trial"), config.data_config, config.benchmark_config
        )

    tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert sorted(r.partition_key for r in tick.run_requests) == ["bilstm", "tiny_transformer"]
    assert {r.run_key for r in tick.run_requests} == {f"{k}#attempt-0" for k in keys.values()}

    # Benchmark bilstm for real: the next tick asks only for tiny_transformer.
    dg.materialize([best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources)
    tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [r.partition_key for r in tick.run_requests] == ["tiny_transformer"]

    # Break tiny_transformer's model so its benchmark fails for real, as a sensor-launched run would.
    info = dg.materialize(
        [best_trial], partition_key="tiny_transformer", instance=instance, resources=resources
    ).output_for_node("best_trial")
    onnx_path = Path(info["trial_dir"]) / "model.onnx"
    original = onnx_path.read_bytes()
    onnx_path.write_bytes(original[: len(original) // 2])
    try:
        for attempt in range(MAX_BENCHMARK_ATTEMPTS):
            tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert [r.run_key for r in tick.run_requests] == [f"{keys['tiny_transformer']}#attempt-{attempt}"]
            failed = dg.materialize(
                [best_trial, benchmark_result],
                selection=[benchmark_result],
                partition_key="tiny_transformer",
                instance=instance,
                resources=resources,
                raise_on_error=False,
                tags=tick.run_requests[0].tags,
            )
            assert not failed.success
        tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(tick, dg.SkipReason)
        assert (
            f"failed {MAX_BENCHMARK_ATTEMPTS} times" in tick.skip_message
            and "already benchmarked: bilstm (key " in tick.skip_message
        )
    finally:
        onnx_path.write_bytes(original)
    assert tick.skip_message  # a finished key is never requested again
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={SENSOR_TAG: "benchmark_sensor", RUN_KEY_TAG: keys["tiny_transformer"]})
    )
    assert len(runs) == MAX_BENCHMARK_ATTEMPTS


def test_discovery_sensor_registers_partitions_once(dagster_setup: dict[str, Any]) -> None:
    resources = dagster_setup["resources"]
    instance = dg.DagsterInstance.ephemeral()
    result = partition_discovery_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    requested = {r.partitions_def_name: set(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert requested["backbone"] == {"tiny_transformer", "bilstm"}
    assert requested["variant"] == {"v1", "v2"}
    assert requested[PAIRS_REGISTRY] == {"bilstm|v1", "bilstm|v2", "tiny_transformer|v1", "tiny_transformer|v2"}
    for name, keys in requested.items():
        instance.add_dynamic_partitions(name, sorted(keys))
    again = partition_discovery_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SkipReason)


def test_schedules_request_every_registered_partition(dagster_setup: dict[str, Any]) -> None:
    instance = dagster_setup["instance"]
    requests = selection_refresh_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK))
    assert sorted(r.partition_key for r in requests) == ["bilstm", "tiny_transformer"]
    assert all(r.run_key.endswith(TICK.isoformat()) for r in requests)
    per_variant = per_variant_selection_refresh_schedule(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)
    )
    assert sorted(str(r.partition_key) for r in per_variant) == [
        "bilstm|v1",
        "bilstm|v2",
        "tiny_transformer|v1",
        "tiny_transformer|v2",
    ]
    with dg.instance_for_test() as fresh:
        assert isinstance(
            selection_refresh_schedule(dg.build_schedule_context(instance=fresh, scheduled_execution_time=TICK)),
            dg.SkipReason,
        )


def test_benchmark_result_per_variant_reuses_an_identical_key(dagster_setup: dict[str, Any]) -> None:
    """The overall best trial is also the best of its variant: the same key, so one benchmark serves both."""
    resources, instance, client, config = (dagster_setup[k] for k in ("resources", "instance", "client", "config"))
    overall = dg.materialize(
        [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
    )
    variant = overall.output_for_node("best_trial")["variant"]
    per_variant = dg.materialize(
        [best_trial_per_variant, benchmark_result_per_variant],
        partition_key=multi_key("bilstm", variant),
        instance=instance,
        resources=resources,
    )
    assert _materialization(per_variant, "benchmark_result_per_variant").metadata["status"].value.startswith("skipped")
    assert len(benchmark_runs(client, config.mlflow.benchmark_experiment)) == 1
    # The stored result (read back from the cache) is the benchmark that ran, to the last bit.
    assert (
        per_variant.output_for_node("benchmark_result_per_variant")["measurements"]
        == overall.output_for_node("benchmark_result")["measurements"]
    )


def test_sources_agree_warns_when_mlflow_was_not_consulted(dagster_setup: dict[str, Any]) -> None:
    """MLflow down: the study answers with the same trial, and the check WARNs instead of passing."""
    instance = dagster_setup["instance"]
    dead_uri = f"http://127.0.0.1:{free_port()}"
    resources = {**dagster_setup["resources"], "mlflow": MlflowResource(tracking_uri=dead_uri)}
    result = dg.materialize([best_trial], partition_key="bilstm", instance=instance, resources=resources)
    assert result.success
    assert _materialization(result, "best_trial").metadata["source"].value == "study"
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "sources_agree" and check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("MLflow not consulted (") and dead_uri in check.description
    assert check.metadata["mlflow_consulted"].value is False


def test_in_progress_runs_of_benchmark_partitions_are_seen_whoever_launched_them(dagster_setup: dict[str, Any]) -> None:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    from benchmark_pipeline.defs.sensors import in_progress_partitions

    instance = dagster_setup["instance"]
    # Runs as the UI or `dagster asset materialize` record them: no sensor tag, a partition or a partition range.
    manual = {
        "one partition": ({PARTITION_NAME_TAG: "bilstm"}, "benchmark_result"),
        "a range": (
            {ASSET_PARTITION_RANGE_START_TAG: "bilstm|v1", ASSET_PARTITION_RANGE_END_TAG: "bilstm|v2"},
            "benchmark_result_per_variant",
        ),
        "finished": ({PARTITION_NAME_TAG: "tiny_transformer"}, "benchmark_result"),
    }
    for name, (tags, asset) in manual.items():
        status = dg.DagsterRunStatus.SUCCESS if name == "finished" else dg.DagsterRunStatus.STARTED
        instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                run_id=str(uuid.uuid4()),
                status=status,
                tags=tags,
                asset_selection=frozenset({dg.AssetKey(asset)}),
            )
        )
    assert in_progress_partitions(instance) == {
        ("benchmark_result", "bilstm"),
        ("benchmark_result_per_variant", "bilstm|v1"),
        ("benchmark_result_per_variant", "bilstm|v2"),
    }

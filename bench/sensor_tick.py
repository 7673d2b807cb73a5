"""Item 2: one ``benchmark_sensor`` tick with 200 partitions and 2,000 existing benchmark runs.

    .venv/bin/python bench/sensor_tick.py [--repeats 5]

Set-up (cached in ``bench/.cache/sensor/``): an MLflow sqlite store whose ``benchmarks`` experiment holds 2,000
benchmark runs shaped like the pipeline's own (the 7 identity tags, 9 params, 64 metrics), written with MLflow's
ORM classes; a real ``dagster.instance_for_test()`` with 50 ``backbone`` partitions and 150
``backbone_variant_pairs`` (50 × 3 variants), each with a ``best_trial`` / ``best_trial_per_variant``
materialization carrying its ``benchmark_key``. Of the 200 keys, 150 have a FINISHED run (some also a FAILED
one), 20 only FAILED runs, 30 none; the other runs are old keys.

Measured, with a real ``mlflow server``: the real ``benchmark_sensor`` called through
``dagster.build_sensor_context``; MLflow requests per tick counted twice — at the client's HTTP layer
(``requests.Session.send`` and ``urllib.request.urlopen`` wrapped to count, then delegate) and in the server's
access log; tick time as a ratio to one paginated fetch of the benchmark experiment's keys (the project's
``search_all_runs`` at its default page size, ``tags.benchmark_key LIKE '%'``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
import urllib.request
import uuid

import requests
import yaml
from _common import CACHE, REPO, machine_info, mlflow_server, print_table, write_result

DIR = CACHE / "sensor"
DB = DIR / "mlflow.db"
MANIFEST = DIR / "manifest.json"
VERSION = 1
N_BACKBONES, VARIANTS, N_RUNS = 50, ("v1", "v2", "v3"), 2000
DATA_FP, CONFIG_HASH = "1-a5377fe2bd51f08f", "0123456789abcdef"


def _key(rng: random.Random, backbone: str, variant: str) -> str:
    return f"{backbone}:{variant}:{uuid.UUID(int=rng.getrandbits(128)).hex}:{uuid.UUID(int=rng.getrandbits(128)).hex}:{DATA_FP}:{CONFIG_HASH}"


def build() -> dict:
    if MANIFEST.exists() and json.loads(MANIFEST.read_text()).get("version") == VERSION:
        return json.loads(MANIFEST.read_text())
    if DIR.exists():
        shutil.rmtree(DIR)
    DIR.mkdir(parents=True)
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    rng = random.Random(7)
    store = SqlAlchemyStore(f"sqlite:///{DB}", (DIR / "artifacts").as_uri())
    experiment_id = store.create_experiment("benchmarks")
    backbones = [f"backbone{i:02d}" for i in range(N_BACKBONES)]
    partitions = [(b, None) for b in backbones] + [(b, v) for b in backbones for v in VARIANTS]
    wanted = {p: _key(rng, p[0], p[1] or "v1") for p in partitions}
    plan: list[tuple[str, str]] = []  # (key, status)
    for i, p in enumerate(partitions):
        if i < 150:
            plan.append((wanted[p], "FINISHED"))
            if i % 10 == 0:
                plan.append((wanted[p], "FAILED"))
        elif i < 170:
            plan.append((wanted[p], "FAILED"))
    while len(plan) < N_RUNS:
        b = rng.choice(backbones)
        plan.append((_key(rng, b, rng.choice(VARIANTS)), rng.choice(["FINISHED"] * 9 + ["FAILED"])))
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker() as session:
        for key, status in plan:
            run_id = uuid.UUID(int=rng.getrandbits(128)).hex
            start = now - rng.randrange(86_400_000 * 60)
            b, v, hpo_run, trial, fp, cfg = key.split(":")
            tags = {
                "mlflow.runName": f"benchmark_{b}_{v}",
                "benchmark_key": key,
                "code.backbone": b,
                "code.variant": v,
                "code.trial_key_hash": trial,
                "code.hpo_run_id": hpo_run,
                "code.data_fingerprint": fp,
                "code.benchmark_config_hash": cfg,
                "benchmark_pipeline.result_logged": "true",
            }
            params = {
                "backends": "['onnxruntime', 'pytorch']",
                "device": "cpu",
                "batch_sizes": "[1, 8, 32]",
                "max_length": "32",
                "warmup": "5",
                "iterations": "30",
                "min_duration_s": "0.2",
                "intra_op_threads": "1",
                "environment": "local",
            }
            metrics = {}
            for backend in ("onnxruntime", "pytorch"):
                for bs in (1, 8, 32):
                    for stat in (
                        "count",
                        "mean_ms",
                        "p50_ms",
                        "p90_ms",
                        "p95_ms",
                        "p99_ms",
                        "stdev_ms",
                        "cv",
                        "throughput_samples_per_s",
                        "peak_rss_mb",
                    ):
                        metrics[f"{backend}.bs{bs}.{stat}"] = rng.uniform(0.1, 100)
            metrics.update(
                {
                    "quality.test_macro_f1": 0.9,
                    "quality.prediction_agreement": 1.0,
                    "quality.max_abs_output_diff": 1e-6,
                    "quality.test_examples": 192.0,
                }
            )
            run = SqlRun(
                name=tags["mlflow.runName"],
                artifact_uri=f"{(DIR / 'artifacts').as_uri()}/{experiment_id}/{run_id}/artifacts",
                run_uuid=run_id,
                experiment_id=int(experiment_id),
                source_type="UNKNOWN",
                source_name="",
                entry_point_name="",
                user_id="bench",
                status=status,
                start_time=start,
                end_time=start + 30_000,
                deleted_time=None,
                source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE,
            )
            run.tags = [SqlTag(key=k, value=val) for k, val in tags.items()]
            run.params = [SqlParam(key=k, value=val) for k, val in params.items()]
            session.add(run)
            for k, val in metrics.items():
                common = {
                    "key": k,
                    "value": val,
                    "timestamp": start + 29_000,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": run_id,
                }
                session.add(SqlMetric(**common))
                session.add(SqlLatestMetric(**common))
    store.engine.dispose()
    manifest = {
        "version": VERSION,
        "experiment_id": experiment_id,
        "runs": len(plan),
        "partitions": [[b, v, wanted[(b, v)]] for b, v in partitions],
    }
    MANIFEST.write_text(json.dumps(manifest))
    return manifest


class RequestCounter:
    """Counts HTTP requests leaving this process (MLflow's client uses ``requests``; the health probe urllib)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._send = requests.Session.send
        self._urlopen = urllib.request.urlopen

    def __enter__(self) -> RequestCounter:
        counter, send, urlopen = self, self._send, self._urlopen

        def counting_send(session, request, **kwargs):
            counter.paths.append(f"{request.method} {request.path_url.split('?')[0]}")
            return send(session, request, **kwargs)

        def counting_urlopen(url, *args, **kwargs):
            counter.paths.append(f"GET {getattr(url, 'full_url', url).split('//', 1)[-1].split('/', 1)[-1]}")
            return urlopen(url, *args, **kwargs)

        requests.Session.send = counting_send
        urllib.request.urlopen = counting_urlopen
        return self

    def __exit__(self, *exc) -> None:
        requests.Session.send = self._send
        urllib.request.urlopen = self._urlopen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    manifest = build()

    import dagster as dg
    from mlflow.entities import ViewType

    from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY, pair_key
    from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
    from benchmark_pipeline.defs.sensors import benchmark_sensor
    from benchmark_pipeline.tracking import make_client, search_all_runs

    log_path = CACHE / "results" / "sensor_mlflow_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = DIR / "root"
    root.mkdir(exist_ok=True)
    with mlflow_server(DB, DIR / "artifacts", log_path) as uri, dg.instance_for_test() as instance:
        raw = yaml.safe_load((REPO / "benchmark_pipeline" / "configs" / "demo.yaml").read_text())
        raw["root_dir"] = str(root)
        raw["mlflow"]["tracking_uri"] = uri
        config_path = DIR / "config.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        resources = {
            "settings": PipelineSettings(config_path=str(config_path)),
            "mlflow": MlflowResource(tracking_uri=uri),
        }

        t = time.perf_counter()
        backbones = sorted({b for b, v, _ in manifest["partitions"] if v is None})
        instance.add_dynamic_partitions("backbone", backbones)
        instance.add_dynamic_partitions("variant", list(VARIANTS))
        instance.add_dynamic_partitions(
            PAIRS_REGISTRY, [pair_key(b, v) for b, v, _ in manifest["partitions"] if v is not None]
        )
        for b, v, key in manifest["partitions"]:
            asset, partition = ("best_trial", b) if v is None else ("best_trial_per_variant", pair_key(b, v))
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=asset, partition=partition, metadata={"benchmark_key": key})
            )
        setup_s = time.perf_counter() - t

        client = make_client(uri)

        def tick():
            return benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))

        def fetch_keys():
            return search_all_runs(
                client, [manifest["experiment_id"]], "tags.benchmark_key LIKE '%'", ViewType.ACTIVE_ONLY
            )

        tick()  # warm-up (imports, connection pool, sqlite page cache)
        fetch_keys()
        tick_times, fetch_times, client_counts, server_counts, paths = [], [], [], [], []
        for _ in range(args.repeats):
            before = log_path.read_text(errors="replace").count('HTTP/1.1"')
            with RequestCounter() as counter:
                t = time.perf_counter()
                result = tick()
                tick_times.append(time.perf_counter() - t)
            time.sleep(0.3)
            server_counts.append(log_path.read_text(errors="replace").count('HTTP/1.1"') - before)
            client_counts.append(len(counter.paths))
            paths = counter.paths
            t = time.perf_counter()
            runs = fetch_keys()
            fetch_times.append(time.perf_counter() - t)
        with RequestCounter() as fetch_counter:
            fetch_keys()
    requested = len(result.run_requests) if isinstance(result, dg.SensorResult) else 0
    tick_s, fetch_s = statistics.median(tick_times), statistics.median(fetch_times)
    out = {
        "partitions": len(manifest["partitions"]),
        "benchmark_runs": manifest["runs"],
        "runs_fetched": len(runs),
        "requests_client_per_tick": client_counts,
        "requests_server_log_per_tick": server_counts,
        "request_paths": paths,
        "baseline_fetch_requests": len(fetch_counter.paths),
        "tick_s_median": tick_s,
        "fetch_s_median": fetch_s,
        "ratio": tick_s / fetch_s,
        "tick_times": tick_times,
        "fetch_times": fetch_times,
        "run_requests": requested,
        "setup_s": setup_s,
        "repeats": args.repeats,
        "machine": machine_info(),
    }
    write_result("sensor_tick", out)
    print_table(
        f"benchmark_sensor tick: {out['partitions']} partitions, {out['benchmark_runs']} benchmark runs (median of {args.repeats})",
        [
            ("MLflow requests per tick (client HTTP layer)", str(max(client_counts)), "target <= 3"),
            ("MLflow requests per tick (server access log)", str(max(server_counts)), "target <= 3"),
            ("  ...which", "", "; ".join(paths)),
            ("tick time", f"{tick_s * 1000:.0f} ms", ""),
            (
                "one paginated fetch of the keys",
                f"{fetch_s * 1000:.0f} ms",
                f"{len(fetch_counter.paths)} requests, {len(runs)} runs",
            ),
            ("tick / fetch", f"{tick_s / fetch_s:.2f}", "target <= 2"),
            ("run requests issued by the tick", str(requested), "expected 50 (30 missing + 20 failed once)"),
        ],
    )


if __name__ == "__main__":
    main()

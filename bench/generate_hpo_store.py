"""Build (once) an MLflow sqlite store holding 10,000 HPO runs: 4 backbones × 3 variants, one experiment per
backbone (``hpo-{backbone}``, the project's naming), written through MLflow's own ``SqlAlchemyStore``.

    .venv/bin/python bench/generate_hpo_store.py [--force]      # ~30 s, cached in bench/.cache/hpo10k/

The store is created by ``SqlAlchemyStore`` (it runs MLflow's schema migrations and creates the experiments);
runs, tags, params and metrics are then inserted with MLflow's own ORM classes in one transaction (what
``create_run`` + ``log_batch`` + ``set_terminated`` write, without 30,000 separate commits). Metric values go
through ``SqlAlchemyStore.sanitize_metric_value`` (NaN → ``is_nan``, ±inf → ±1.797e308), as ``log_batch`` does.

Mixed in, per (backbone, variant) study: FAILED / RUNNING / KILLED runs, deleted runs, runs missing a required
tag or ``code.variant``, NaN / +inf / missing metrics, another data fingerprint, ties on the objective (values
rounded to 3 decimals) and a planted top tie: three eligible runs share the best value; the winner (lowest
trial number) is the *oldest* run, and a better FAILED run, a NaN run and a +inf run sit next to it.
Trial numbers follow start time within a study, as Optuna assigns them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
import uuid

from _common import CACHE

STORE_DIR = CACHE / "hpo10k"
DB_PATH = STORE_DIR / "mlflow.db"
MANIFEST = STORE_DIR / "manifest.json"
BACKBONES = ("tiny_transformer", "bilstm", "cnn", "gru")
VARIANTS = ("v1", "v2", "v3")
TOTAL_RUNS = 10_000
METRIC = "macro-f1"
DATA_CONFIG = {
    "name": "synthetic-ner",
    "version": "1",
    "seed": 13,
    "vocab_size": 400,
    "max_length": 32,
    "train_size": 768,
    "validation_size": 192,
    "test_size": 192,
    "local_path": None,
}
GENERATOR_VERSION = 2


def build(force: bool = False) -> dict:
    if MANIFEST.exists() and not force:
        manifest = json.loads(MANIFEST.read_text())
        if manifest.get("version") == GENERATOR_VERSION:
            return manifest
    if STORE_DIR.exists():
        shutil.rmtree(STORE_DIR)
    STORE_DIR.mkdir(parents=True)
    started = time.perf_counter()

    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from benchmark_pipeline.hashing import data_fingerprint

    data_fp = data_fingerprint(DATA_CONFIG)
    store = SqlAlchemyStore(f"sqlite:///{DB_PATH}", (STORE_DIR / "artifacts").as_uri())
    rng = random.Random(20261130)
    experiments = {b: store.create_experiment(f"hpo-{b}") for b in BACKBONES}
    now_ms = int(time.time() * 1000)
    per_study = [TOTAL_RUNS // 12 + (1 if i < TOTAL_RUNS % 12 else 0) for i in range(12)]
    rows = []
    study_index = 0
    for b_index, backbone in enumerate(BACKBONES):
        for v_index, variant in enumerate(VARIANTS):
            n = per_study[study_index]
            study_index += 1
            study_name = f"{backbone}_{variant}"
            study_key = uuid.uuid5(uuid.NAMESPACE_DNS, study_name).hex + uuid.uuid5(uuid.NAMESPACE_URL, study_name).hex
            starts = sorted(now_ms - rng.randrange(30 * 86_400_000) for _ in range(n))
            top = round(0.95 - 0.01 * b_index - 0.003 * v_index, 3)
            # planted: trial numbers 0 (the winner, oldest), 1 and 2 tie at `top` (three eligible runs)
            # 3: FAILED with a better value, 4: NaN, 5: +inf, 6: missing metric
            for number in range(n):
                status, deleted, value = "FINISHED", False, round(rng.betavariate(5, 3) * (top - 0.05), 3)
                drop_tag, drop_variant, fp = None, False, data_fp
                if number in (0, 1, 2):
                    value = top
                elif number == 3:
                    status, value = "FAILED", top + 0.02
                elif number == 4:
                    value = float("nan")
                elif number == 5:
                    value = float("inf")
                elif number == 6:
                    value = None
                else:
                    r = rng.random()
                    if r < 0.03:
                        status = "FAILED"
                    elif r < 0.04:
                        status = "RUNNING"
                    elif r < 0.05:
                        status = "KILLED"
                    elif r < 0.06:
                        deleted = True
                    elif r < 0.075:
                        drop_tag = rng.choice(["code.trial_key_hash", "code.study_key_hash"])
                    elif r < 0.085:
                        drop_variant = True  # variant parsed from code.study_name
                    elif r < 0.10:
                        value = float("nan")
                    elif r < 0.105:
                        value = float("inf")
                    elif r < 0.115:
                        value = None
                    elif r < 0.125:
                        fp = "1-0000000000000000"
                        value = top + 0.01  # better, but trained on other data
                # the planted winner is the oldest run; its tied rivals are the newest
                start = (
                    starts[0] if number == 0 else starts[-number] if number in (1, 2) else starts[min(number, n - 1)]
                )
                run_id = uuid.UUID(int=rng.getrandbits(128)).hex
                trial_key = uuid.UUID(int=rng.getrandbits(128)).hex
                tags = {
                    "mlflow.runName": f"{study_name}_trial_{number}",
                    "code.backbone": backbone,
                    "code.variant": variant,
                    "code.study_name": study_name,
                    "code.study_key_hash": study_key,
                    "code.trial_key_hash": trial_key,
                    "code.trial_number": str(number),
                    "code.data_fingerprint": fp,
                }
                if drop_tag:
                    del tags[drop_tag]
                if drop_variant:
                    del tags["code.variant"]
                params = {
                    "learning_rate": f"{rng.uniform(1e-3, 3e-2):.6g}",
                    "dropout": f"{rng.uniform(0, 0.3):.4g}",
                    "width": str(rng.choice([32, 48, 64])),
                }
                metrics = {
                    "train_loss": rng.uniform(0.1, 2.0),
                    "train_seconds": rng.uniform(1, 30),
                    "onnx_max_abs_diff": rng.uniform(0, 1e-5),
                    "num_parameters": float(rng.randrange(10_000, 90_000)),
                }
                if value is not None:
                    metrics[METRIC] = value
                rows.append((experiments[backbone], run_id, start, status, deleted, tags, params, metrics))
    with store.ManagedSessionMaker() as session:
        for experiment_id, run_id, start, status, deleted, tags, params, metrics in rows:
            finished = status != "RUNNING"
            run = SqlRun(
                name=tags["mlflow.runName"],
                artifact_uri=f"{(STORE_DIR / 'artifacts').as_uri()}/{experiment_id}/{run_id}/artifacts",
                run_uuid=run_id,
                experiment_id=int(experiment_id),
                source_type=SourceType.to_string(SourceType.UNKNOWN),
                source_name="",
                entry_point_name="",
                user_id="bench",
                status=status,
                start_time=start,
                end_time=start + 60_000 if finished else None,
                deleted_time=start + 120_000 if deleted else None,
                source_version="",
                lifecycle_stage=LifecycleStage.DELETED if deleted else LifecycleStage.ACTIVE,
            )
            run.tags = [SqlTag(key=k, value=v) for k, v in tags.items()]
            run.params = [SqlParam(key=k, value=v) for k, v in params.items()]
            session.add(run)
            for key, raw in metrics.items():
                is_nan, value = store.sanitize_metric_value(float(raw))
                common = {
                    "key": key,
                    "value": value,
                    "timestamp": start + 59_000,
                    "step": 0,
                    "is_nan": is_nan,
                    "run_uuid": run_id,
                }
                session.add(SqlMetric(**common))
                session.add(SqlLatestMetric(**common))
        assert RunStatus  # statuses are written as MLflow's strings
    store.engine.dispose()
    manifest = {
        "version": GENERATOR_VERSION,
        "runs": len(rows),
        "experiments": experiments,
        "data_fp": data_fp,
        "build_s": time.perf_counter() - started,
        "db": str(DB_PATH),
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached store exists")
    args = parser.parse_args()
    manifest = build(args.force)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()

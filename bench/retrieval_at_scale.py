"""Item 1: best-trial retrieval over 10,000 MLflow runs, side by side with the obvious alternatives.

    .venv/bin/python bench/retrieval_at_scale.py [--repeats 5]

Uses the cached store of ``bench/generate_hpo_store.py`` (built on first use), serves it with a real
``mlflow server`` on 127.0.0.1 (sqlite backend, one worker), and times, in the same process and run:

* ``retrieve_best_trials`` for one backbone and for all four, ``overall`` and ``per_variant``;
* the design document's pseudo-code: ``search_runs(max_results=1000)`` (default order: newest first), then
  ``max`` of the metric, per partition;
* the correct naive baseline: ``mlflow.search_runs`` (fluent API, a pandas DataFrame, every page) over every
  HPO experiment, and the pick done in Python — "one full fetch"; and the same for one backbone's experiment;
* one full fetch with ``MlflowClient.search_runs`` pages (no DataFrame), for reference.

Every pick is checked against a brute-force oracle that reads the sqlite file directly (``sqlite3``, no MLflow
code) and applies docs/selection.md. Timings are medians over ``--repeats`` runs; each is also given as a
ratio to the naive full fetch.
"""

from __future__ import annotations

import argparse
import logging
import math
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import CACHE, machine_info, mlflow_server, print_table, write_result
from generate_hpo_store import BACKBONES, DATA_CONFIG, METRIC, STORE_DIR, build

CLAMP = 1.7976931348623157e308
REQUIRED = ("code.backbone", "code.study_key_hash", "code.trial_key_hash")


# ----------------------------------------------------------------------------------------------- oracle


def _variant(tags: dict[str, str]) -> str:
    import re

    if tags.get("code.variant"):
        return tags["code.variant"]
    m = re.search(r"_(v\d+)$", tags.get("code.study_name") or "")
    return m.group(1) if m else "default"


def oracle(db: Path, data_fp: str) -> dict[tuple[str, str | None], str]:
    """{(backbone, variant or None): trial_key_hash} straight from the sqlite tables (no MLflow code)."""
    con = sqlite3.connect(db)
    runs = {
        r: (status, stage) for r, status, stage in con.execute("select run_uuid, status, lifecycle_stage from runs")
    }
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    for run, key, value in con.execute("select run_uuid, key, value from tags"):
        tags[run][key] = value
    metric = {
        run: (value, is_nan)
        for run, value, is_nan in con.execute(
            "select run_uuid, value, is_nan from latest_metrics where key = ?", (METRIC,)
        )
    }
    best: dict[tuple[str, str | None], tuple] = {}
    for run, (status, stage) in runs.items():
        t = tags[run]
        if stage != "active" or status != "FINISHED" or any(not t.get(k) for k in REQUIRED) or run not in metric:
            continue
        value, is_nan = metric[run]
        if is_nan or not math.isfinite(value) or abs(value) >= CLAMP:
            continue
        if t.get("code.data_fingerprint", data_fp) != data_fp:
            continue
        try:
            number = int(t["code.trial_number"]) if "code.trial_number" in t else None
        except ValueError:
            continue
        key = (-value, (0, number) if number is not None else (1, 0), t["code.trial_key_hash"], run)
        for partition in ((t["code.backbone"], None), (t["code.backbone"], _variant(t))):
            if partition not in best or key < best[partition][0]:
                best[partition] = (key, t["code.trial_key_hash"])
    return {p: v[1] for p, v in best.items()}


# ------------------------------------------------------------------------------------------ contenders


def flatten(result: dict[str, Any], scope: str) -> dict[tuple[str, str | None], str]:
    if scope == "overall":
        return {(b, None): info["trial_id"] for b, info in result.items()}
    return {(b, v): info["trial_id"] for b, per in result.items() for v, info in per.items()}


def naive_pick(df, backbones) -> dict[tuple[str, str | None], str]:
    """The correct pick in Python over a DataFrame from ``mlflow.search_runs`` (active runs only)."""
    col = f"metrics.{METRIC}"
    best: dict[tuple[str, str | None], tuple] = {}
    records = df.to_dict("records")
    for row in records:
        t = {k[5:]: v for k, v in row.items() if k.startswith("tags.") and isinstance(v, str)}
        if row["status"] != "FINISHED" or any(not t.get(k) for k in REQUIRED) or t["code.backbone"] not in backbones:
            continue
        value = row.get(col)
        if value is None or not isinstance(value, float) or not math.isfinite(value) or abs(value) >= CLAMP:
            continue
        if t.get("code.data_fingerprint", DATA_CONFIG_FP) != DATA_CONFIG_FP:
            continue
        try:
            number = int(t["code.trial_number"]) if "code.trial_number" in t else None
        except ValueError:
            continue
        key = (-value, (0, number) if number is not None else (1, 0), t["code.trial_key_hash"], row["run_id"])
        for partition in ((t["code.backbone"], None), (t["code.backbone"], _variant(t))):
            if partition not in best or key < best[partition][0]:
                best[partition] = (key, t["code.trial_key_hash"])
    return {p: v[1] for p, v in best.items()}


def design_pseudo(client, experiments: dict[str, str], backbones) -> dict[tuple[str, str | None], str]:
    """The design document's sketch: ``search_runs(max_results=1000)`` then ``max`` of the metric."""
    picks = {}
    for backbone in backbones:
        runs = client.search_runs([experiments[backbone]], f"tags.`code.backbone` = '{backbone}'", max_results=1000)
        by_variant: dict[str | None, list] = defaultdict(list)
        for run in runs:
            if METRIC in run.data.metrics:
                by_variant[None].append(run)
                by_variant[_variant(run.data.tags)].append(run)
        for variant, candidates in by_variant.items():
            top = max(candidates, key=lambda r: r.data.metrics[METRIC])
            picks[(backbone, variant)] = top.data.tags.get("code.trial_key_hash", "<no trial_key_hash>")
    return picks


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


DATA_CONFIG_FP = ""


def main() -> None:
    global DATA_CONFIG_FP
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="pyinstrument profile of one-partition retrieval")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # selection logs an INFO/WARNING line per partition; not under test here

    manifest = build()
    DATA_CONFIG_FP = manifest["data_fp"]
    experiments = manifest["experiments"]
    truth = oracle(STORE_DIR / "mlflow.db", DATA_CONFIG_FP)

    import mlflow
    from mlflow.entities import ViewType

    from benchmark_pipeline.selection.trial_retrieval import retrieve_best_trials
    from benchmark_pipeline.tracking import make_client, search_all_runs

    hpo_config = {"objective": {"metric": METRIC, "direction": "maximize"}}
    empty_hpo_dir = Path(tempfile.mkdtemp(prefix="bench_hpo_"))
    log_path = CACHE / "results" / "retrieval_mlflow_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with mlflow_server(STORE_DIR / "mlflow.db", STORE_DIR / "artifacts", log_path) as uri:
        client = make_client(uri)
        mlflow.set_tracking_uri(uri)
        hpo_experiments = {b: {"id": experiments[b], "name": f"hpo-{b}"} for b in BACKBONES}
        selection = {"hpo_output_dir": str(empty_hpo_dir)}

        def retrieve(backbones, scope):
            return retrieve_best_trials(
                list(backbones),
                hpo_experiments,
                None,
                selection,
                hpo_config,
                DATA_CONFIG,
                empty_hpo_dir,
                "bench",
                scope,
                client,
            )

        def naive(backbones):
            df = mlflow.search_runs(experiment_ids=[experiments[b] for b in backbones], max_results=100_000)
            return naive_pick(df, set(backbones))

        def client_full_fetch():
            return search_all_runs(client, [experiments[b] for b in BACKBONES], run_view_type=ViewType.ALL)

        one = [BACKBONES[0]]
        # warm both server and client caches once (first request pays imports/connection set-up)
        retrieve(one, "overall")
        naive(one)
        rows: dict[str, dict[str, Any]] = {}
        cases = [
            ("naive full fetch (mlflow.search_runs, all 4 experiments) + pick", lambda: naive(BACKBONES), None),
            ("MlflowClient full fetch, all pages (no pick)", client_full_fetch, "skip"),
            ("naive, one backbone's experiment", lambda: naive(one), None),
            ("retrieve_best_trials 1 partition, overall", lambda: flatten(retrieve(one, "overall"), "overall"), None),
            (
                "retrieve_best_trials 1 backbone, per_variant",
                lambda: flatten(retrieve(one, "per_variant"), "per_variant"),
                None,
            ),
            ("retrieve_best_trials all 4, overall", lambda: flatten(retrieve(BACKBONES, "overall"), "overall"), None),
            (
                "retrieve_best_trials all 4, per_variant",
                lambda: flatten(retrieve(BACKBONES, "per_variant"), "per_variant"),
                None,
            ),
            ("design pseudo-code, all 16 partitions", lambda: design_pseudo(client, experiments, BACKBONES), None),
        ]
        for name, fn, check in cases:
            seconds, picks = timed(fn, args.repeats)
            row: dict[str, Any] = {"median_s": seconds}
            if check is None:
                agree = sum(1 for p, trial in picks.items() if truth.get(p) == trial)
                row.update(
                    partitions=len(picks),
                    agree=agree,
                    wrong=len(picks) - agree,
                    missing=sum(1 for p in truth if p[0] in {q[0] for q in picks} and p not in picks),
                )
            rows[name] = row
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
            for _ in range(3):
                retrieve(one, "overall")
            profiler.stop()
            (CACHE / "results" / "retrieval_profile.txt").write_text(
                profiler.output_text(unicode=False, color=False, show_all=False)
            )
            print(profiler.output_text(unicode=False, color=False)[:6000])

    base = rows["naive full fetch (mlflow.search_runs, all 4 experiments) + pick"]["median_s"]
    naive_one = rows["naive, one backbone's experiment"]["median_s"]
    client_full = rows["MlflowClient full fetch, all pages (no pick)"]["median_s"]
    table = []
    for name, row in rows.items():
        row["ratio_to_naive_full"] = row["median_s"] / base
        row["ratio_to_client_full"] = row["median_s"] / client_full
        agree = f"{row['agree']}/{row['partitions']}" if "agree" in row else "-"
        table.append(
            (
                name,
                f"{row['median_s'] * 1000:8.0f} ms",
                f"x{row['ratio_to_naive_full']:.3f} naive-full  x{row['ratio_to_client_full']:.3f} client-full  oracle {agree}",
            )
        )
    one_ratio = rows["retrieve_best_trials 1 partition, overall"]["median_s"] / base
    all_ratio = (
        max(
            rows["retrieve_best_trials all 4, overall"]["median_s"],
            rows["retrieve_best_trials all 4, per_variant"]["median_s"],
        )
        / base
    )
    pseudo = rows["design pseudo-code, all 16 partitions"]
    result = {
        "runs": manifest["runs"],
        "rows": rows,
        "oracle_partitions": len(truth),
        "one_partition_ratio": one_ratio,
        "one_partition_ratio_to_same_scope_naive": rows["retrieve_best_trials 1 partition, overall"]["median_s"]
        / naive_one,
        "all_partitions_ratio": all_ratio,
        "design_pseudo_wrong": pseudo["wrong"],
        "design_pseudo_partitions": pseudo["partitions"],
        "repeats": args.repeats,
        "machine": machine_info(),
    }
    write_result("retrieval_at_scale", result)
    print_table(
        f"Retrieval over {manifest['runs']} MLflow runs (median of {args.repeats}; ratios to the naive full fetch)",
        table,
    )
    print(f"\n  one partition / naive full fetch      : {one_ratio:.3f}  (target <= 0.25)")
    print(f"  one partition / naive same experiment : {result['one_partition_ratio_to_same_scope_naive']:.3f}")
    print(f"  all partitions / naive full fetch     : {all_ratio:.3f}  (target <= 1.0)")
    print(f"  design pseudo-code wrong picks        : {pseudo['wrong']}/{pseudo['partitions']}")
    agree_all = all(r.get("wrong", 0) == 0 for n, r in rows.items() if "design" not in n and "agree" in r)
    print(f"  agreement with the oracle (all but the pseudo-code): {'100%' if agree_all else 'NOT 100%'}")


if __name__ == "__main__":
    main()

"""Item 3 (issue 14): the full demo pipeline cold, then again with everything benchmarked, side by side in one run.

    .venv/bin/python bench/idempotent_rerun.py [--baseline REV]     # ~3 min on 2 cores (+ ~4 min with --baseline)

Runs ``scripts/demo.sh`` (exactly as ``make demo``) twice in a scratch working copy
(``bench/.cache/demo_run``: ``scripts/`` and ``benchmark_pipeline/`` from ``git archive HEAD``, ahead on
``PYTHONPATH``, and a symlink to ``.venv``), so ``outputs/`` and ``.dagster_home/`` of the checkout are not
touched. With ``--baseline REV`` it first does the same for the committed tree at ``REV`` (e.g. the commit
before the single-run backfills), in ``bench/.cache/demo_run_baseline``, so old and new are measured on the
same machine in the same session. Reports, per tree:

* wall time of each run, of its Dagster runs (one line per stage: ``dagster asset materialize`` calls at older
  revisions, runs in one process since ``scripts/demo_runs.py``), and their ratio (target: warm ≤ 10% of cold);
* benchmark executions in the second run, counted twice: MLflow runs tagged ``benchmark_key`` before and after,
  and "samples/s; elapsed" progress lines (one per measured backend × batch size) in the run's log; and the
  HPO trials trained in it ("running N of M trials" lines of the sweeps);
* one partition materialized alone afterwards (``best_trial,benchmark_result --partition <first backbone>``,
  everything benchmarked): the wall time of that one CLI call;
* the floor of a warm run: the Python processes the demo starts × the time one of them needs just to import
  ``benchmark_pipeline.definitions``, measured here, the modules that import loads (torch, onnxruntime,
  matplotlib: must be absent) and the largest import-time contributors (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

from _common import REPO, RESULTS_DIR, machine_info, print_table, write_result

PY = str(REPO / ".venv" / "bin" / "python")
DAGSTER = str(REPO / ".venv" / "bin" / "dagster")


def prepare(work, rev: str) -> None:
    """A scratch copy of the committed tree at ``rev`` (not the working tree: work in progress must not break
    or skew the measurement); PYTHONPATH puts its package ahead of the editable install."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.symlink(REPO / ".venv", work / ".venv")
    archive = subprocess.run(
        ["git", "archive", rev, "benchmark_pipeline", "scripts"], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)


def _env(work) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENCHMARK_PIPELINE_", "DAGSTER_"))}
    env["PYTHONPATH"] = str(work)
    return env


def benchmark_run_count(work) -> int:
    """Runs of the ``benchmarks`` experiment tagged ``benchmark_key`` (the leaderboard asset logs an untagged
    ``leaderboard`` run there on every materialization; that is not a benchmark)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    db = work / "outputs" / "mlflow" / "mlflow.db"
    if not db.exists():
        return 0
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("benchmarks")
    if experiment is None:
        return 0
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], "", ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(r for r in page if r.data.tags.get("benchmark_key"))
        token = page.token
        if not token:
            return len(runs)


def run_demo(work, label: str) -> dict:
    before = benchmark_run_count(work)
    started = time.perf_counter()
    proc = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=work, env=_env(work), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    (RESULTS_DIR / f"demo_{label}.stdout.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"demo ({label}) failed with {proc.returncode}")
    log = (work / "outputs" / "demo" / "dagster.log").read_text(errors="replace")
    shutil.copy2(work / "outputs" / "demo" / "dagster.log", RESULTS_DIR / f"demo_{label}.dagster.log")
    steps = re.findall(r"^  (\S.*?)\s+([0-9.]+)s$", proc.stdout, flags=re.MULTILINE)

    def seconds(pattern: str) -> float:
        return sum(float(v) / (1000 if unit == "ms" else 1) for v, unit in re.findall(pattern, log))

    summary = re.search(r"Benchmark materializations: (\d+) ran, (\d+) skipped", proc.stdout)
    return {
        "wall_s": wall,
        "materialize_s": sum(float(s) for _, s in steps),
        "benchmark_runs_before": before,
        "benchmark_runs_after": benchmark_run_count(work),
        "measured_steps_in_log": len(re.findall(r"samples/s; elapsed", log)),
        "trials_trained_in_log": sum(int(n) for n in re.findall(r"running (\d+) of \d+ trials", log)),
        "demo_ran_skipped": [int(summary.group(1)), int(summary.group(2))] if summary else None,
        "materialize_steps": [(name, float(s)) for name, s in steps],
        "dagster_steps_in_process_s": seconds(r"Finished steps in process \(pid: \d+\) in ([0-9.]+)(m?s)"),
        "asset_step_bodies_s": seconds(r'Finished execution of step "[a-z_]+" in ([0-9.]+)(m?s)'),
    }


def one_partition(work) -> dict:
    """``best_trial,benchmark_result`` for one backbone, alone, as the UI's or the sensor's one-partition runs."""
    env = {**_env(work), "DAGSTER_HOME": str(work / ".dagster_home")}
    pairs = subprocess.run(
        [PY, "-m", "benchmark_pipeline.demo", "pairs"], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout
    backbone = sorted(line.split("|")[0] for line in pairs.split())[0]
    command = [
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "benchmark_pipeline.definitions",
        "--select",
        "best_trial,benchmark_result",
        "--partition",
        backbone,
        "--config-json",
        '{"execution": {"config": {"in_process": {}}}}',
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit("one-partition materialization failed")
    return {
        "backbone": backbone,
        "wall_s": wall,
        "skipped": "skipped: already benchmarked" in proc.stdout + proc.stderr,
    }


def import_floor(work) -> dict:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(
            [PY, "-c", "import benchmark_pipeline.definitions"],
            check=True,
            cwd=work,
            env=_env(work),
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run([str(REPO / ".venv" / "bin" / "dagster"), "--version"], check=True, capture_output=True)
    dagster_version_s = time.perf_counter() - t
    probe = "import sys, json, benchmark_pipeline.definitions; print(json.dumps(sorted(m for m in ('torch', 'onnxruntime', 'matplotlib') if m in sys.modules)))"
    loaded = json.loads(
        subprocess.run([PY, "-c", probe], check=True, cwd=work, env=_env(work), capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    proc = subprocess.run(
        [PY, "-X", "importtime", "-c", "import benchmark_pipeline.definitions"],
        capture_output=True,
        text=True,
        cwd=work,
        env=_env(work),
        check=False,
    )
    # cumulative import time of the heavy third-party packages (the first time each top module is imported;
    # they overlap: mlflow imports pandas, dagster imports sqlalchemy, ...)
    heavy = (
        "dagster",
        "torch",
        "mlflow",
        "optuna",
        "onnxruntime",
        "pandas",
        "sqlalchemy",
        "onnx",
        "numpy",
        "pydantic",
        "grpc",
        "matplotlib",
    )
    by_top: dict[str, int] = {}
    total_us = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and m.group(4) in heavy:
            by_top[m.group(4)] = max(by_top.get(m.group(4), 0), int(m.group(2)))
        if m and m.group(4) == "benchmark_pipeline.definitions":
            total_us = int(m.group(2))
    top = sorted(by_top.items(), key=lambda kv: -kv[1])
    return {
        "import_definitions_s_min": min(times),
        "import_definitions_importtime_s": total_us / 1e6,
        "heavy_modules_loaded": loaded,
        "dagster_version_s": dagster_version_s,
        "importtime_top_ms": [(name, us / 1000) for name, us in top],
    }


def measure(work, rev: str, label: str) -> dict:
    prepare(work, rev)
    cold = run_demo(work, f"{label}_cold")
    warm = run_demo(work, f"{label}_warm")
    alone = one_partition(work)
    floor = import_floor(work)
    script = (work / "scripts" / "demo.sh").read_text()
    # One process per `dagster asset materialize` call (older revisions), plus each `$PY ...` of the script.
    cli_calls = len(warm["materialize_steps"]) if "asset materialize" in script else 0
    processes = cli_calls + len(re.findall(r'"?\$PY"? ', script))
    return {
        "rev": subprocess.run(
            ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip(),
        "cold": cold,
        "warm": warm,
        "ratio_warm_to_cold": warm["wall_s"] / cold["wall_s"],
        "ratio_warm_to_cold_materialize": warm["materialize_s"] / cold["materialize_s"],
        "benchmark_executions_second_run_mlflow": warm["benchmark_runs_after"] - warm["benchmark_runs_before"],
        "one_partition": alone,
        "python_processes_per_demo": processes,
        "floor": floor,
        "floor_estimate_s": processes * floor["import_definitions_s_min"],
        "dagster_cli_calls": cli_calls,
        "dagster_runs": len(warm["materialize_steps"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="also measure the committed tree at this revision first, for comparison")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    trees = [("baseline", args.baseline)] if args.baseline else []
    trees.append(("head", "HEAD"))
    result = {
        label: measure(REPO / "bench" / ".cache" / ("demo_run" if label == "head" else "demo_run_baseline"), rev, label)
        for label, rev in trees
    }
    result["machine"] = machine_info()
    write_result("idempotent_rerun", result)
    labels = [label for label, _ in trees]

    def row(name: str, value, note: str = "") -> tuple[str, str, str]:
        return (name, "  |  ".join(value(result[label]) for label in labels), note)

    print_table(
        "Idempotent rerun (make demo twice): " + " vs ".join(f"{label} {result[label]['rev']}" for label in labels),
        [
            row("cold demo wall", lambda r: f"{r['cold']['wall_s']:.1f} s"),
            row("warm demo wall", lambda r: f"{r['warm']['wall_s']:.1f} s"),
            row("cold: sum of the stages' runs", lambda r: f"{r['cold']['materialize_s']:.1f} s"),
            row("warm: sum of the stages' runs", lambda r: f"{r['warm']['materialize_s']:.1f} s"),
            row("warm / cold (wall)", lambda r: f"{r['ratio_warm_to_cold']:.3f}", "target <= 0.10"),
            row("warm / cold (the stages' runs)", lambda r: f"{r['ratio_warm_to_cold_materialize']:.3f}"),
            row("dagster asset materialize calls", lambda r: str(r["dagster_cli_calls"])),
            row("Dagster runs per demo", lambda r: str(r["dagster_runs"])),
            row(
                "benchmark runs created in 2nd run (MLflow)",
                lambda r: str(r["benchmark_executions_second_run_mlflow"]),
                "must be 0",
            ),
            row(
                "benchmark steps measured in 2nd run (log)",
                lambda r: str(r["warm"]["measured_steps_in_log"]),
                "must be 0",
            ),
            row("HPO trials trained in 2nd run (log)", lambda r: str(r["warm"]["trials_trained_in_log"]), "must be 0"),
            row(
                "demo's 'N ran, M skipped' (cold / warm)",
                lambda r: f"{r['cold']['demo_ran_skipped']} / {r['warm']['demo_ran_skipped']}",
            ),
            row(
                "one partition alone (best_trial,benchmark_result)",
                lambda r: f"{r['one_partition']['wall_s']:.1f} s",
                "no slower than baseline",
            ),
            row("python processes started per demo", lambda r: str(r["python_processes_per_demo"])),
            row(
                "import benchmark_pipeline.definitions (process)",
                lambda r: f"{r['floor']['import_definitions_s_min']:.2f} s",
                "best of 3, fresh process",
            ),
            row(
                "  ... of which the import itself (-X importtime)",
                lambda r: f"{r['floor']['import_definitions_importtime_s']:.2f} s",
            ),
            row(
                "  ... torch / onnxruntime / matplotlib loaded",
                lambda r: ",".join(r["floor"]["heavy_modules_loaded"]) or "none",
                "must be none",
            ),
            row("floor = processes x import", lambda r: f"{r['floor_estimate_s']:.1f} s"),
            row(
                "warm: time inside asset steps (Dagster log)",
                lambda r: f"{r['warm']['asset_step_bodies_s']:.1f} s",
                "the pipeline's own work",
            ),
        ],
    )
    for label in labels:
        r = result[label]
        print(f"per-call wall, {label} (cold vs warm):")
        for (name, c), (_, w) in zip(r["cold"]["materialize_steps"], r["warm"]["materialize_steps"], strict=True):
            print(f"  {name:90s} {c:6.1f}s {w:6.1f}s")
        print(
            "  largest top-level imports (cumulative ms):",
            ", ".join(f"{n} {ms:.0f}" for n, ms in r["floor"]["importtime_top_ms"]),
        )


if __name__ == "__main__":
    main()

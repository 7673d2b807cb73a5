"""``scripts/demo_runs.py`` (what ``make demo`` runs): the demo's five stages as five Dagster runs in one process,
on a real Dagster instance (``DAGSTER_HOME``) and the real MLflow server, over a private copy of the session's
trained demo sweeps (so no trial is trained here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

from benchmark_pipeline_tests.demo_sweeps import DemoSweeps

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAGE_LINE = re.compile(r"^  (\S.*?)\s+[0-9.]+s$", re.MULTILINE)


def _demo_runs(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "demo_runs.py")],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def test_the_demo_is_five_runs_in_one_process_and_its_rerun_benchmarks_nothing(
    demo_sweeps: DemoSweeps, tmp_path: Path
) -> None:
    config_path, _raw = demo_sweeps.private_config_file(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BENCHMARK_PIPELINE_", "MLFLOW_"))},
        "BENCHMARK_PIPELINE_CONFIG": str(config_path),
        "DAGSTER_HOME": str(home),
    }

    first = _demo_runs(env)
    assert STAGE_LINE.findall(first) == [
        "demo_dataset,discovered_partitions",
        "hpo_sweep [bilstm|v1...tiny_transformer|v2]",
        "best_trial,benchmark_result [bilstm...tiny_transformer]",
        "best_trial_per_variant,benchmark_result_per_variant [bilstm|v1...tiny_transformer|v2]",
        "leaderboard",
    ]
    ran, skipped = map(int, re.search(r"Benchmark materializations: (\d+) ran, (\d+) skipped", first).groups())
    # Two backbones overall and four pairs: 6 benchmark partitions; an overall pick that is also its variant's
    # pick has the same key, so it is benchmarked once and skipped once.
    assert ran + skipped == 6 and ran >= 2, first
    assert "== Best trials (selection_scope='overall')" in first and "NOT BENCHMARKED" not in first

    again = _demo_runs(env)
    assert "Benchmark materializations: 0 ran, 6 skipped" in again, again
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert len(runs) == 10 and {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}

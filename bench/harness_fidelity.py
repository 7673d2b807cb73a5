"""Item 4: does the benchmark harness report what a bare loop measures, and how repeatable is its p50?

    .venv/bin/python bench/harness_fidelity.py [--repeats 5] [--batch-size 8] [--seconds 1.0]

Model: a ``tiny_transformer`` trial of the demo sweep (``model.onnx`` + ``model.pt`` + ``trial_meta.json``),
copied once to ``bench/.cache/harness/model`` from ``outputs/hpo`` (run ``make demo`` first) or from the scratch
demo of ``bench/idempotent_rerun.py``. Data: the demo's synthetic test split, written under
``bench/.cache/harness``.

In one process, ``--repeats`` rounds, each:

1. the harness: ``run_benchmark`` (the function the assets call) with ``backends: [onnxruntime]``, one batch
   size, ``warmup: 20``, ``iterations: 30``, ``min_duration_s: --seconds`` → its ``p50_ms``;
2. a bare loop on an ONNX Runtime session with the *same* thread settings: 20 untimed calls, then
   ``session.run`` timed with ``time.perf_counter_ns`` for the same number of calls → its median.

Reported: the ratio harness p50 / bare p50 per round and overall (target within 3%), and the coefficient of
variation of the harness's p50 over the rounds (target ≤ 5%). For comparison, the bare loop is also timed with
ONNX Runtime's default threading (intra-op threads = cores, spinning workers).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from _common import CACHE, REPO, machine_info, print_table, write_result

DIR = CACHE / "harness"


def find_model() -> Path:
    target = DIR / "model"
    if (target / "model.onnx").is_file():
        return target
    for root in (REPO / "outputs" / "hpo", CACHE / "demo_run" / "outputs" / "hpo"):
        metas = sorted(root.glob("*/tiny_transformer/study-*/trial-*/trial_meta.json"))
        for meta in metas:
            if (meta.parent / "model.onnx").is_file() and (meta.parent / "model.pt").is_file():
                shutil.copytree(meta.parent, target)
                return target
    raise SystemExit("no demo model found: run `make demo` (or bench/idempotent_rerun.py) first")


def bare_loop(session, feed: dict, warmup: int, count: int) -> np.ndarray:
    for _ in range(warmup):
        session.run(None, feed)
    clock = time.perf_counter_ns
    samples = np.empty(count, dtype=np.int64)
    for i in range(count):
        started = clock()
        session.run(None, feed)
        samples[i] = clock() - started
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="min_duration_s of each harness measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort

    from benchmark_pipeline.benchmarking.backends.onnxruntime import open_onnx_session
    from benchmark_pipeline.benchmarking.inputs import load_test_data
    from benchmark_pipeline.benchmarking.runner import run_benchmark
    from benchmark_pipeline.config import load_config
    from benchmark_pipeline.demo.dataset import write_dataset

    model_dir = find_model()
    meta = json.loads((model_dir / "trial_meta.json").read_text())
    config = load_config(env={})
    data_config = dict(config.data_config)
    test_path = write_dataset(data_config, DIR).test
    bench_config = {
        **config.benchmark_config,
        "backends": ["onnxruntime"],
        "batch_sizes": [args.batch_size],
        "warmup": 20,
        "iterations": 30,
        "min_duration_s": args.seconds,
        "intra_op_threads": 1,
    }
    trial_info = {
        "backbone": meta["backbone"],
        "variant": meta["variant"],
        "trial_id": meta["trial_key_hash"],
        "run_id": meta.get("mlflow_run_id"),
        "hyperparameters": meta["hyperparameters"],
    }
    opened = open_onnx_session(model_dir / "model.onnx", "cpu", 1)
    same_threads = opened.session
    # The batch the harness times: the test split's first examples, read as the benchmark reads them.
    feed = load_test_data(test_path, opened.input_specs(), int(bench_config["max_length"])).batch(args.batch_size)
    default_threads = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    rounds = []
    for _ in range(args.repeats):
        result = run_benchmark(
            "bench:key", trial_info, model_dir, test_path, data_config, bench_config, progress=lambda m: None
        )
        (measured,) = result.measurements
        count = int(measured["count"])
        bare = bare_loop(same_threads, feed, 20, count)
        default = bare_loop(default_threads, feed, 20, count)
        rounds.append(
            {
                "harness_p50_ms": measured["p50_ms"],
                "harness_count": count,
                "harness_cv": measured["cv"],
                "bare_p50_ms": float(np.median(bare)) / 1e6,
                "bare_cv": float(bare.std(ddof=1) / bare.mean()),
                "default_threads_p50_ms": float(np.median(default)) / 1e6,
                "default_threads_cv": float(default.std(ddof=1) / default.mean()),
            }
        )
    harness = [r["harness_p50_ms"] for r in rounds]
    bare = [r["bare_p50_ms"] for r in rounds]
    default = [r["default_threads_p50_ms"] for r in rounds]
    ratios = [h / b for h, b in zip(harness, bare, strict=True)]
    cv = statistics.stdev(harness) / statistics.mean(harness)
    cv_default = statistics.stdev(default) / statistics.mean(default)
    out = {
        "model": str(model_dir),
        "trial": meta["trial_key_hash"],
        "batch_size": args.batch_size,
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_max_dev": max(abs(r - 1) for r in ratios),
        "harness_p50_cv_over_repeats": cv,
        "default_threads_p50_cv_over_repeats": cv_default,
        "bench_config": bench_config,
        "ort_version": ort.__version__,
        "machine": machine_info(),
    }
    write_result("harness_fidelity", out)
    rows = [
        (
            f"round {i + 1}: harness p50 / bare p50",
            f"{h:.4f}/{b:.4f} ms",
            f"ratio {h / b:.3f}; harness n={r['harness_count']}",
        )
        for i, (h, b, r) in enumerate(zip(harness, bare, rounds, strict=True))
    ]
    rows += [
        (
            "harness p50 / bare loop p50 (median)",
            f"{out['ratio_median']:.3f}",
            f"max |dev| {out['ratio_max_dev'] * 100:.1f}%  target within 3%",
        ),
        ("CV of harness p50 over repeats", f"{cv * 100:.2f}%", "target <= 5%"),
        (
            "bare loop, ORT default threads: p50",
            f"{statistics.median(default):.4f} ms",
            f"CV of p50 over repeats {cv_default * 100:.2f}%",
        ),
    ]
    print_table(
        f"Harness fidelity: {meta['backbone']} trial {meta['trial_key_hash'][:12]}, batch {args.batch_size}, 1 intra-op thread",
        rows,
    )


if __name__ == "__main__":
    main()

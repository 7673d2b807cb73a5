"""Helpers for ``make demo``: list partitions to materialize, and print the closing summary.

``python -m benchmark_pipeline.demo pairs|backbones|summary``
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from benchmark_pipeline.benchmarking.existence import ResultStore
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.report import format_benchmark_table
from benchmark_pipeline.config import PipelineConfig, load_config
from benchmark_pipeline.demo.dataset import dataset_directory
from benchmark_pipeline.selection.report import format_selection_table
from benchmark_pipeline.selection.shapes import map_trial_infos
from benchmark_pipeline.selection.trial_retrieval import retrieve_configured_best_trials
from benchmark_pipeline.tracking import make_client


def print_summary(config: PipelineConfig) -> None:
    client = make_client(config.mlflow.tracking_uri)
    print("\n== Where the HPO records are")
    print(f"  MLflow tracking URI : {config.mlflow.tracking_uri}")
    print(f"  HPO experiments     : {', '.join(config.mlflow.hpo_experiment_name(b) for b in config.backbones)}")
    print(f"  Optuna studies      : {config.hpo_output_dir}/<backbone>/study-*/study.db")
    print(f"  Trial folders       : {config.hpo_output_dir}/<backbone>/study-*/trial-*/")
    print(f"  Dataset             : {dataset_directory(config.data_config, config.root_dir)}")
    print(f"  Benchmark cache     : {config.root_dir / 'outputs' / 'benchmarking' / config.environment / 'cache'}")
    store = ResultStore.at(config.root_dir, config.environment, config.benchmark_experiment(), client)
    for scope in ("overall", "per_variant"):
        best = retrieve_configured_best_trials(config, scope, client)
        print(f"\n== Best trials (selection_scope={scope!r})")
        print(format_selection_table(best))

        def stored(info: dict[str, Any]) -> dict[str, Any]:
            key = key_for_trial(info, config.data_config, config.benchmark_config)
            return store.find(key) or {
                "backbone": info["backbone"],
                "variant": info["variant"],
                "benchmark_key": key,
                "status": "NOT BENCHMARKED",
            }

        print(f"\n== Benchmarks of those trials ({scope})")
        print(format_benchmark_table(map_trial_infos(best, stored)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark_pipeline.demo")
    parser.add_argument("command", choices=["pairs", "backbones", "summary"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config()
    if args.command == "pairs":
        print("\n".join(f"{b}|{v}" for b in config.backbones for v in config.variants))
    elif args.command == "backbones":
        print("\n".join(config.backbones))
    else:
        print_summary(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

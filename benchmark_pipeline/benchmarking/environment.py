"""The environment saved next to every benchmark result: library versions, CPU, threads, providers."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import onnxruntime as ort
import torch

_LIBRARIES = ("onnxruntime-gpu", "onnxruntime", "torch", "onnx", "numpy", "mlflow", "optuna", "dagster")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def collect_environment(intra_op_threads: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "libraries": library_versions(),
        "threads": {
            "intra_op_threads_config": intra_op_threads,
            "torch_num_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "onnxruntime_available_providers": ort.get_available_providers(),
        "torch_cuda_available": torch.cuda.is_available(),
    }

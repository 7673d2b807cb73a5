"""The layers, as a fresh process sees them: importing the package or the code location loads no torch and
no onnxruntime (they load when a benchmark runs), and the core never imports the embedded demo.

The import-linter contracts in ``pyproject.toml`` (run by ``.ci/run``) check the imports statically; these
tests check what a real interpreter loads.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
elapsed = time.perf_counter() - started
print(json.dumps({{"elapsed_s": elapsed, "loaded": sorted(m for m in ("torch", "onnxruntime", "transformers", "optuna", "benchmark_pipeline.demo.models", "benchmark_pipeline.demo.sweep") if m in sys.modules)}}))
"""


def _probe(module: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_the_package_loads_nothing_heavy() -> None:
    probe = _probe("benchmark_pipeline")
    assert probe["loaded"] == [], probe


@pytest.mark.parametrize(
    "module", ["benchmark_pipeline.hashing", "benchmark_pipeline.contract", "benchmark_pipeline.benchmarking.keys"]
)
def test_core_modules_load_without_torch_or_onnxruntime(module: str) -> None:
    loaded = _probe(module)["loaded"]
    assert "torch" not in loaded and "onnxruntime" not in loaded, loaded  # type: ignore[operator]


def test_the_code_location_loads_without_torch_onnxruntime_or_the_demo_models() -> None:
    loaded = _probe("benchmark_pipeline.definitions")["loaded"]
    assert not {
        "torch",
        "onnxruntime",
        "transformers",
        "benchmark_pipeline.demo.models",
        "benchmark_pipeline.demo.sweep",
    } & set(loaded), loaded  # type: ignore[arg-type]


def test_public_api_resolves_lazily() -> None:
    import benchmark_pipeline
    import benchmark_pipeline.benchmarking

    for package in (benchmark_pipeline, benchmark_pipeline.benchmarking):
        assert sorted(package.__all__) == sorted(package._EXPORTS), package.__name__  # type: ignore[attr-defined]
    for name in benchmark_pipeline.__all__:
        assert getattr(benchmark_pipeline, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        benchmark_pipeline.nope  # noqa: B018

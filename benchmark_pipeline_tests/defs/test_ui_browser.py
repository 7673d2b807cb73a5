"""A real browser check of the Dagster UI: ``dagster-webserver`` on 127.0.0.1, opened in headless Chromium
(Debian's ``chromium``; ``make test`` installs it where missing when run as root).

The UI is a React app, so each page is loaded with ``--virtual-time-budget`` and checked in the DOM that
Chromium dumps once the budget is spent. One check needs a click (the latency chart opens in a dialog): it
drives the same Chromium over the DevTools protocol (``--remote-debugging-port``, ``websockets``). Set ``BENCHMARK_PIPELINE_UPDATE_SCREENSHOTS=1`` to refresh the
screenshot in ``docs/images/`` that the README shows.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import websockets

from benchmark_pipeline.defs.benchmark_assets import benchmark_result
from benchmark_pipeline.defs.leaderboard_assets import leaderboard
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.defs.selection_assets import best_trial
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "dagster_ui_benchmark_result.png"
CHART_SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "dagster_ui_latency_chart.png"
PIPELINE_ASSETS = (
    "demo_dataset", "discovered_partitions", "hpo_sweep", "best_trial", "best_trial_per_variant",
    "benchmark_result", "benchmark_result_per_variant", "leaderboard",
)  # fmt: skip
DEMO_ASSETS = ("demo_dataset", "hpo_sweep")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--virtual-time-budget=15000",
]  # fmt: skip


def _chromium() -> str:
    for name in (os.environ.get("BENCHMARK_PIPELINE_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    pytest.fail(
        "Chromium is not installed: `make test` installs Debian's chromium when run as root (apt-get install -y chromium)"
    )


def _browse(url: str, *extra: str) -> str:
    """Load ``url`` in a fresh headless Chromium profile; returns stdout (the DOM with ``--dump-dom``)."""
    # Chromium helper processes (crashpad, utility) may still write to the profile as it is removed.
    with tempfile.TemporaryDirectory(prefix="chromium_profile_", ignore_cleanup_errors=True) as profile:
        done = subprocess.run(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, f"chromium exited {done.returncode} for {url}:\n{done.stderr[-2000:]}"
    return done.stdout


def _cdp_click(url: str, label: str) -> tuple[list[dict[str, Any]], bytes]:
    """Open ``url`` in Chromium driven over the DevTools protocol, click the element whose text is ``label``;
    returns the page's ``<img>`` elements (src prefix, natural size) and a PNG screenshot."""
    port = free_port()
    # Chromium helper processes (crashpad, utility) may still write to the profile as it is removed.
    with tempfile.TemporaryDirectory(prefix="chromium_profile_", ignore_cleanup_errors=True) as profile:
        flags = [flag for flag in CHROMIUM_FLAGS if not flag.startswith("--virtual-time-budget")]
        process = subprocess.Popen(
            [_chromium(), *flags, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as response:
                        pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                    if pages:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                assert time.monotonic() < deadline, "chromium's DevTools endpoint did not come up"
                time.sleep(0.2)
            return asyncio.run(_click(pages[0]["webSocketDebuggerUrl"], url, label))
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the browser and all its helper processes
            process.wait(timeout=30)


async def _click(debugger_url: str, url: str, label: str) -> tuple[list[dict[str, Any]], bytes]:
    async with websockets.connect(debugger_url, max_size=2**26) as socket:
        counter = 0

        async def call(method: str, **params: Any) -> dict[str, Any]:
            nonlocal counter
            counter += 1
            await socket.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                message = json.loads(await socket.recv())
                if message.get("id") == counter:
                    assert "error" not in message, message
                    return message["result"]

        async def evaluate(expression: str) -> Any:
            return (await call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

        find = f"[...document.querySelectorAll('*')].find(e => e.children.length === 0 && e.textContent.trim() === {json.dumps(label)})"
        await call("Page.navigate", url=url)
        for _ in range(120):
            if await evaluate(f"!!{find}"):
                break
            await asyncio.sleep(0.25)
        assert await evaluate(f"(() => {{ const e = {find}; if (!e) return false; e.click(); return true; }})()"), (
            f"no {label!r} on {url}"
        )
        images: list[dict[str, Any]] = []
        for _ in range(40):  # until the dialog's image has loaded
            await asyncio.sleep(0.25)
            images = await evaluate(
                "[...document.querySelectorAll('img')].map(i => ({src: i.src.slice(0, 30), width: i.naturalWidth, height: i.naturalHeight}))"
            )
            if any(i["src"].startswith("data:image/png") and i["width"] for i in images):
                break
        shot = await call("Page.captureScreenshot", format="png")
        return images, base64.b64decode(shot["data"])


def _small_png(source: bytes | Path, target: Path) -> None:
    from PIL import Image  # installed with matplotlib

    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
    image.convert("RGB").quantize(colors=128).save(target, optimize=True)  # a small PNG for git


def _visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _shown(name: str, text: str) -> bool:
    """The name as a word, or middle-truncated by the graph (``bench…_per_variant``)."""
    if re.search(rf"(?<![\w…]){re.escape(name)}(?![\w…])", text):
        return True
    return any(
        name.startswith(a) and name.endswith(b) and len(a) >= 3 and len(b) >= 3
        for a, b in re.findall(r"(\w+)…(\w+)", text)
    )


@pytest.fixture
def webserver(demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    config_path, _raw = demo_sweeps.private_config_file(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # nux: off, so the "Join the Dagster community" dialog does not cover the page.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n", encoding="utf-8")

    resources = {
        "settings": PipelineSettings(config_path=str(config_path)),
        "mlflow": MlflowResource(tracking_uri=mlflow_server),
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("backbone", ["tiny_transformer", "bilstm"])
        instance.add_dynamic_partitions("variant", ["v1", "v2"])
        instance.add_dynamic_partitions(
            PAIRS_REGISTRY, ["bilstm|v1", "bilstm|v2", "tiny_transformer|v1", "tiny_transformer|v2"]
        )
        assert dg.materialize(
            [best_trial, benchmark_result], partition_key="bilstm", instance=instance, resources=resources
        ).success
        assert dg.materialize([leaderboard], instance=instance, resources=resources).success

    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BENCHMARK_PIPELINE_CONFIG": str(config_path),
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    log = tmp_path / "webserver.log"
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        "-m",
        "benchmark_pipeline.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster-webserver did not start; log tail:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)
        yield {"url": url, "tmp": tmp_path}
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_ui_lists_the_assets_and_renders_benchmark_metadata(webserver: dict[str, Any]) -> None:
    url = webserver["url"]

    catalog = _visible_text(_browse(f"{url}/assets", "--dump-dom"))
    missing = [name for name in PIPELINE_ASSETS if not _shown(name, catalog)]
    assert not missing, f"the asset catalog does not list {missing}: {catalog[:2000]}"

    lineage_dom = _browse(f"{url}/assets/leaderboard?view=lineage&lineageScope=upstream&lineageDepth=10", "--dump-dom")
    lineage = _visible_text(lineage_dom)
    assert "AssetNodeLineageGraph" in lineage_dom  # the graph itself rendered, not only the page frame
    upstream = [name for name in PIPELINE_ASSETS if name not in ("discovered_partitions", *DEMO_ASSETS)]
    missing = [name for name in upstream if not _shown(name, lineage)]
    assert not missing, f"the asset graph upstream of leaderboard lacks {missing}: {lineage[:2000]}"
    # The demo sits at the edge of the graph: nothing of the pipeline depends on its assets.
    assert not [name for name in DEMO_ASSETS if _shown(name, lineage)], (
        f"a demo asset is upstream of leaderboard: {lineage[:2000]}"
    )

    page = f"{url}/assets/benchmark_result?view=partitions&partition=bilstm"
    dom = _browse(page, "--dump-dom")
    text = _visible_text(dom)
    assert "Metadata" in text and "status benchmarked" in text, text[:3000]
    tables = [t for t in re.findall(r"<table\b.*?</table>", dom, flags=re.DOTALL) if "CPUExecutionProvider" in t]
    assert tables, f"no rendered metadata table holds the latency rows: {text[:3000]}"
    latency = _visible_text(tables[-1])
    for expected in ("backend", "batch_size", "p50_ms", "samples_per_s", "onnxruntime", "pytorch", "torch:cpu"):
        assert expected in latency, (expected, latency)
    assert re.search(r"bilstm:v\d:[0-9a-f]{32}:[0-9a-f]{64}:1-[0-9a-f]{16}:[0-9a-f]{16}", text), (
        "the benchmark key is not shown"
    )
    assert "latency_chart" in text

    shot = webserver["tmp"] / "benchmark_result.png"
    _browse(page, "--window-size=1400,1100", f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1400, 1100)

    # The latency chart (markdown with an inline PNG) opens in a dialog and renders as a 600x400 image.
    images, dialog = _cdp_click(page, "[Show Markdown]")
    assert {"src": "data:image/png;base64,iVBORw0K", "width": 600, "height": 400} in images, images
    assert dialog[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("BENCHMARK_PIPELINE_UPDATE_SCREENSHOTS") == "1":
        _small_png(shot, SCREENSHOT)
        _small_png(dialog, CHART_SCREENSHOT)

"""Item 5: where does the time of fetching MLflow runs go? (the floor under retrieval and sensor ticks)

    .venv/bin/python bench/profile_retrieval.py

Splits one 1,000-run page of ``search_runs`` of the 10k store (``bench/generate_hpo_store.py``) into what the
MLflow server does (``SqlAlchemyStore.search_runs``, entity → protobuf, ``MessageToJson``) and what the client
does (JSON → protobuf → entities, as ``RestStore.search_runs``), each timed in this process with MLflow's own
functions; then profiles ``retrieve_best_trials`` for one backbone against a live server with pyinstrument
(``bench/.cache/results/retrieval_profile.txt``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from _common import CACHE, machine_info, mlflow_server, print_table, write_result
from generate_hpo_store import BACKBONES, DATA_CONFIG, METRIC, STORE_DIR, build


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    logging.disable(logging.WARNING)
    manifest = build()
    from google.protobuf.json_format import MessageToJson, Parse
    from mlflow.entities import Run, ViewType
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{STORE_DIR / 'mlflow.db'}", (STORE_DIR / "artifacts").as_uri())
    exp = manifest["experiments"][BACKBONES[0]]
    store_s, runs = best_of(lambda: store.search_runs([exp], "", ViewType.ALL, 1000))
    proto_s, response = best_of(lambda: SearchRuns.Response(runs=[r.to_proto() for r in runs]))
    json_s, text = best_of(lambda: MessageToJson(response))
    parse_s, parsed = best_of(lambda: Parse(text, SearchRuns.Response()))
    entities_s, _ = best_of(lambda: [Run.from_proto(r) for r in parsed.runs])
    stdlib_json_s, _ = best_of(lambda: json.loads(text))
    n = len(runs)
    rows = {
        "server: SqlAlchemyStore.search_runs (sqlite + ORM)": store_s,
        "server: entities -> protobuf": proto_s,
        "server: protobuf -> JSON (MessageToJson)": json_s,
        "client: JSON -> protobuf (json_format.Parse)": parse_s,
        "client: protobuf -> entities": entities_s,
    }
    total = sum(rows.values())

    from pyinstrument import Profiler

    from benchmark_pipeline.selection.trial_retrieval import retrieve_best_trials
    from benchmark_pipeline.tracking import make_client

    hpo_dir = Path(tempfile.mkdtemp(prefix="bench_hpo_"))
    log = CACHE / "results" / "profile_mlflow_server.log"
    with mlflow_server(STORE_DIR / "mlflow.db", STORE_DIR / "artifacts", log) as uri:
        client = make_client(uri)
        experiments = {b: {"id": manifest["experiments"][b]} for b in BACKBONES}

        def retrieve():
            return retrieve_best_trials(
                [BACKBONES[0]],
                experiments,
                None,
                {"hpo_output_dir": str(hpo_dir)},
                {"objective": {"metric": METRIC, "direction": "maximize"}},
                DATA_CONFIG,
                hpo_dir,
                "bench",
                "overall",
                client,
            )

        retrieve()
        profiler = Profiler(interval=0.001)
        profiler.start()
        t = time.perf_counter()
        retrieve()
        wall = time.perf_counter() - t
        profiler.stop()
    text_profile = profiler.output_text(unicode=False, color=False)
    (CACHE / "results" / "retrieval_profile.txt").write_text(text_profile)
    out = {
        "runs_in_page": n,
        "per_1000_runs_s": {k: v * 1000 / n for k, v in rows.items()},
        "sum_s": total,
        "json_bytes": len(text),
        "stdlib_json_loads_s": stdlib_json_s,
        "retrieve_one_backbone_wall_s": wall,
        "runs_in_backbone": sum(1 for _ in store.search_runs([exp], "", ViewType.ALL, 50000)),
        "machine": machine_info(),
    }
    write_result("profile_retrieval", out)
    table = [(k, f"{v * 1000:.0f} ms", f"{v / total * 100:4.1f}%") for k, v in rows.items()]
    table += [
        (
            "sum for one 1,000-run page",
            f"{total * 1000:.0f} ms",
            f"{total / n * 1e6:.0f} us per run; {len(text) / n:.0f} JSON bytes per run",
        ),
        (
            "(stdlib json.loads of the same text)",
            f"{stdlib_json_s * 1000:.0f} ms",
            "what a client without protobuf would pay",
        ),
        (
            f"retrieve_best_trials, one backbone ({out['runs_in_backbone']} runs), live server",
            f"{wall * 1000:.0f} ms",
            "pyinstrument profile: bench/.cache/results/retrieval_profile.txt",
        ),
    ]
    print_table("Where fetching 1,000 MLflow runs goes (best of 3, in-process, MLflow's own functions)", table)
    print("\nclient-side profile (top):")
    print("\n".join(text_profile.splitlines()[:40]))


if __name__ == "__main__":
    main()

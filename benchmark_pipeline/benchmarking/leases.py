"""One benchmark per key across machines, for the Python API: a lease recorded in MLflow.

The local ``flock`` (:mod:`~benchmark_pipeline.benchmarking.claims`) covers one file system; two machines
benchmarking one key both measured and both logged a FINISHED run (issue #13). The lease is the benchmark's
own MLflow run while it is RUNNING, tagged with the key, an owner token (:data:`TAG_LEASE_OWNER`) and a
heartbeat (:data:`TAG_LEASE_HEARTBEAT`, epoch seconds, refreshed every :data:`LEASE_HEARTBEAT_S` by a
background thread). A lease whose heartbeat is older than :data:`LEASE_STALE_S` is stale: its holder died, and
it no longer blocks anyone (it never counts as a result: only FINISHED runs do).

Acquiring, by every contender the same way (MLflow has no compare-and-set):

1. wait while another live lease for the key exists (its holder is measuring; afterwards the caller finds
   its FINISHED run and measures nothing);
2. create the RUNNING run with this owner's token and a heartbeat;
3. after :data:`LEASE_SETTLE_S` (other contenders' runs are visible by then), read every live lease of the
   key: the earliest ``(start_time, run_id)`` holds it. The others delete their run and go back to 1.

Every contender reads the same runs, so all agree on the holder. A lease also records its holder's *scope*
(:data:`TAG_LEASE_SCOPE`: host and cache folder, the reach of the local ``flock``). A caller that holds that
``flock`` knows a RUNNING lease of its own scope is dead (its holder would still hold the lock) and does not
wait for it to go stale: a benchmark SIGKILLed on this machine blocks no rerun here. The one assumption (docs/deployment.md):
machine clocks agree to well within :data:`LEASE_SETTLE_S` (NTP), since ``start_time`` is the client's clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mlflow.entities import Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline.tracking import search_all_runs

logger = logging.getLogger(__name__)

TAG_LEASE_OWNER = "benchmark_pipeline.lease.owner"
TAG_LEASE_HEARTBEAT = "benchmark_pipeline.lease.heartbeat"
TAG_LEASE_SCOPE = "benchmark_pipeline.lease.scope"
#: The MLflow tag every benchmark run carries (see :mod:`~benchmark_pipeline.benchmarking.mlflow_logging`).
TAG_BENCHMARK_KEY = "benchmark_key"
#: Seconds between a holder's heartbeats.
LEASE_HEARTBEAT_S = 15.0
#: Seconds without a heartbeat after which a lease is stale (its holder is taken for dead).
LEASE_STALE_S = 120.0
#: Seconds a contender waits after creating its run before reading who holds the lease.
LEASE_SETTLE_S = 0.5
#: Seconds between checks while another machine holds the lease.
LEASE_POLL_S = 1.0
#: Longest wait for another machine's benchmark of the same key.
DEFAULT_LEASE_TIMEOUT_S = 1800.0


class LeaseTimeoutError(TimeoutError):
    """Another machine held the key's lease for longer than the timeout."""


def live_leases(
    client: MlflowClient,
    experiment_id: str,
    benchmark_key: str,
    dead_scope: str | None = None,
    now: float | None = None,
) -> list[Run]:
    """RUNNING runs of ``benchmark_key`` with a fresh heartbeat, holder first (earliest start, then run id);
    leases of ``dead_scope`` (the scope whose ``flock`` the caller holds: their holders are dead) excluded."""
    now = time.time() if now is None else now
    running = search_all_runs(
        client, [experiment_id], f"tags.`{TAG_BENCHMARK_KEY}` = '{benchmark_key}' and attributes.status = 'RUNNING'"
    )
    fresh = []
    for run in running:
        try:
            beat = float(run.data.tags.get(TAG_LEASE_HEARTBEAT, "nan"))
        except ValueError:
            continue
        if now - beat <= LEASE_STALE_S and (dead_scope is None or run.data.tags.get(TAG_LEASE_SCOPE) != dead_scope):
            fresh.append(run)
    return sorted(fresh, key=lambda run: (run.info.start_time or 0, run.info.run_id))


def _heartbeat(client: MlflowClient, run_id: str, stop: threading.Event) -> None:
    while not stop.wait(LEASE_HEARTBEAT_S):
        try:
            client.set_tag(run_id, TAG_LEASE_HEARTBEAT, f"{time.time():.0f}")
        except (MlflowException, OSError) as error:  # a blip; the lease survives LEASE_STALE_S of them
            logger.warning("lease heartbeat of MLflow run %s failed: %s", run_id, error)


def _abandon(client: MlflowClient, run_id: str) -> None:
    try:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        client.delete_run(run_id)
    except (MlflowException, OSError) as error:
        logger.warning("could not close the abandoned lease run %s: %s", run_id, error)


@contextlib.contextmanager
def mlflow_lease(
    client: MlflowClient,
    experiment_id: str,
    benchmark_key: str,
    *,
    create_run: Callable[[], str],
    is_done: Callable[[], bool],
    scope: str | None = None,
    timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> Iterator[str | None]:
    """Hold ``benchmark_key``'s lease for the block; yields the holder's RUNNING run id (made by
    ``create_run``, the benchmark's own run), or ``None`` when ``is_done()`` became true while waiting (another
    machine finished the key: measure nothing). The heartbeat stops when the block ends; the caller sets the
    run's final status (FINISHED or FAILED), which ends the lease."""
    contest = _Contest(client, experiment_id, benchmark_key, scope, owner=uuid.uuid4().hex)
    deadline = time.monotonic() + timeout_s
    while True:
        if contest.wait_while_held(is_done, deadline, timeout_s):
            yield None
            return
        run_id = create_run()
        if contest.take(run_id):
            break
    stop = threading.Event()
    beating = threading.Thread(
        target=_heartbeat, args=(client, run_id, stop), name=f"lease-{benchmark_key[:12]}", daemon=True
    )
    beating.start()
    try:
        yield run_id
    finally:
        stop.set()
        beating.join()


@dataclass(frozen=True)
class _Contest:
    """One contender for one key's lease (steps 1-3 of the module docstring)."""

    client: MlflowClient
    experiment_id: str
    benchmark_key: str
    scope: str | None
    owner: str

    def wait_while_held(self, is_done: Callable[[], bool], deadline: float, timeout_s: float) -> bool:
        """Step 1: wait while another live lease exists; True when ``is_done()`` (the holder finished the key)."""
        waited = False
        while live_leases(self.client, self.experiment_id, self.benchmark_key, self.scope):
            waited = True
            if is_done():
                return True
            if time.monotonic() > deadline:
                raise LeaseTimeoutError(
                    f"another machine has held the MLflow lease on benchmark {self.benchmark_key} for over {timeout_s:.0f}s"
                )
            time.sleep(LEASE_POLL_S)
        return waited and is_done()  # the holder finished between two polls

    def take(self, run_id: str) -> bool:
        """Steps 2-3 for the contender's new RUNNING run: True when it holds the lease; else the run is closed
        and deleted (it must not look like a benchmark attempt) and the contender waits again."""
        tags = {
            TAG_LEASE_OWNER: self.owner,
            TAG_LEASE_HEARTBEAT: f"{time.time():.0f}",
            **({TAG_LEASE_SCOPE: self.scope} if self.scope else {}),
        }
        try:
            self.client.log_batch(run_id, tags=[RunTag(name, value) for name, value in tags.items()])
            time.sleep(LEASE_SETTLE_S)
            # Every live lease but the dead ones of this scope; this contender's own run among them.
            holders = [
                run for run in live_leases(self.client, self.experiment_id, self.benchmark_key)
                if run.info.run_id == run_id or self.scope is None or run.data.tags.get(TAG_LEASE_SCOPE) != self.scope
            ]  # fmt: skip
        except BaseException:
            _abandon(self.client, run_id)  # a run that never became a lease must not stay RUNNING
            raise
        if holders and holders[0].info.run_id == run_id:
            return True
        logger.info(
            "benchmark %s: another machine holds the lease (MLflow run %s); waiting",
            self.benchmark_key,
            holders[0].info.run_id if holders else "?",
        )
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        self.client.delete_run(run_id)
        return False

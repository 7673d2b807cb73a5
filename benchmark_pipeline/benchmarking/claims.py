"""One benchmark per key at a time: an exclusive ``flock`` on a per-key lock file next to the cache.

Processes that materialize the same key concurrently queue on the lock; the first benchmarks, the others
then find its cache entry and report it. The kernel releases a ``flock`` when its holder dies (SIGKILL
included), so a crashed holder's claim expires at once — no stale lock files to clean up. Scope: processes
that share the cache folder on one machine (or a network filesystem that supports ``flock``).

Every write of a key's result holds its claim: a benchmark, the upload of a result cached during an MLflow
outage, a repair of the cache. The lock file is opened with ``O_NOFOLLOW``: a symbolic link planted where it
should be is refused, never followed (the write would land in whatever file it points to).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from benchmark_pipeline.benchmarking.cache import cache_path

#: Longest wait for another process's benchmark of the same key before giving up.
DEFAULT_CLAIM_TIMEOUT_S = 1800.0


class ClaimTimeoutError(TimeoutError):
    """Another process held the key's claim for longer than the timeout."""


def claim_path(cache_directory: Path, benchmark_key: str) -> Path:
    # Beside the cache folder, not in it: the cache holds results only.
    return cache_directory.parent / "claims" / (cache_path(cache_directory, benchmark_key).name + ".lock")


class ClaimFileError(OSError):
    """The claim file cannot be used safely (a symbolic link, or not a regular file)."""


def _open_claim_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if path.is_symlink():
            raise ClaimFileError(
                f"the claim file {path} is a symbolic link; refusing to follow it (remove it)"
            ) from None
        raise ClaimFileError(f"cannot open the claim file {path}: {error}") from None


def _mark_holder(descriptor: int) -> None:
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()} {time.time():.0f}\n".encode())


@contextlib.contextmanager
def benchmark_claim(
    cache_directory: Path, benchmark_key: str, timeout_s: float = DEFAULT_CLAIM_TIMEOUT_S
) -> Iterator[None]:
    """Hold the exclusive claim on ``benchmark_key`` for the duration of the block (waiting for it)."""
    path = claim_path(cache_directory, benchmark_key)
    descriptor = _open_claim_file(path)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClaimTimeoutError(
                        f"another process has held the claim {path} for over {timeout_s:.0f}s"
                    ) from None
                time.sleep(0.1)
        _mark_holder(descriptor)
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


@contextlib.contextmanager
def try_benchmark_claim(cache_directory: Path, benchmark_key: str) -> Iterator[bool]:
    """Take the claim on ``benchmark_key`` if it is free; yields whether it was taken. For work another
    holder of the claim would do anyway (an upload of a pending result): skipping beats waiting."""
    descriptor = _open_claim_file(claim_path(cache_directory, benchmark_key))
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        _mark_holder(descriptor)
        yield True
    finally:
        os.close(descriptor)

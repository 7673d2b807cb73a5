"""Optuna storages opened once per URL, with a bounded connection pool.

``optuna.load_study(storage=url)`` builds a new :class:`optuna.storages.RDBStorage`, hence a new SQLAlchemy
engine with its own pool (5 + 10 overflow connections), for every study it loads; the engines are only closed
when garbage-collected. Against a shared database of 204 studies one retrieval opened 289 connections and hit
``too many clients already`` (issue #13). :class:`StudyStorages` keeps one storage per URL for the life of a
retrieval, every study read through it, and closes the pool at the end.

The bound (docs/deployment.md): at most :data:`POOL_SIZE` + :data:`MAX_OVERFLOW` connections per storage URL at
once, and since the pool keeps them, about that many opened per URL for a whole retrieval.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

import optuna
import sqlalchemy.exc

logger = logging.getLogger(__name__)

#: Connections each storage's pool keeps open; retrieval reads one study at a time.
POOL_SIZE = 1
#: Extra connections the pool may open beyond :data:`POOL_SIZE` (Optuna's version check nests a query).
MAX_OVERFLOW = 1
#: Attempts at opening a storage whose schema another process is creating at the same moment.
OPEN_ATTEMPTS = 5


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_rdb_storage(
    url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None, attempts: int = OPEN_ATTEMPTS
) -> optuna.storages.RDBStorage:
    """An :class:`~optuna.storages.RDBStorage` for ``url`` with a bounded pool, retried while another process
    creates the same schema (two workers starting on a fresh database race on Optuna's ``alembic_version``
    row and tables: a ``UNIQUE constraint`` or ``duplicate key`` error for the loser, which then finds them).

    ``pool_pre_ping`` replaces connections the database server dropped (a restart, an idle timeout).
    ``attempts=1`` for readers: a corrupt or foreign database fails at once instead of being retried.
    """
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if not _is_sqlite(url):
        engine_kwargs.update(pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    for attempt in range(1, attempts + 1):
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                skip_compatibility_check=True,
            )
            if storage.get_current_version() == _schema_head(storage):
                return storage
            # Another schema version: Optuna's own check raises its message (upgrade the storage or Optuna).
            close_storage(storage)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
            )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.ProgrammingError,
        ) as error:
            if attempt == attempts:
                raise
            logger.info(
                "Optuna storage %s is being created by another process (%s); retrying", url, type(error).__name__
            )
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


_SCHEMA_HEAD: list[str] = []


def _schema_head(storage: optuna.storages.RDBStorage) -> str:
    """The schema version this Optuna writes, read once per process: Optuna's compatibility check reads it from
    its migration scripts on every open (~50 ms), which over the studies of a retrieval was most of its time."""
    if not _SCHEMA_HEAD:
        _SCHEMA_HEAD.append(storage.get_head_version())
    return _SCHEMA_HEAD[0]


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Close the connections of ``storage``'s pool (a no-op for storages without one)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


class StudyStorages:
    """One Optuna storage per URL, shared by every study read while it is open; ``close()`` ends the pools.

    Use as a context manager around one retrieval. Not thread-safe: one retrieval reads one study at a time.
    """

    def __init__(self) -> None:
        self._storages: dict[str, optuna.storages.RDBStorage] = {}

    def get(self, url: str) -> optuna.storages.RDBStorage:
        storage = self._storages.get(url)
        if storage is None:
            storage = self._storages[url] = open_rdb_storage(url, attempts=1)
        return storage

    def close(self) -> None:
        for storage in self._storages.values():
            close_storage(storage)
        self._storages.clear()

    def __enter__(self) -> StudyStorages:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""Forward the core library's ``logging`` records (source disagreements, skips, progress) to ``context.log``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dagster as dg

_CORE_LOGGER = "benchmark_pipeline"


class _DagsterLogHandler(logging.Handler):
    def __init__(self, context: dg.OpExecutionContext | dg.AssetExecutionContext) -> None:
        super().__init__(level=logging.INFO)
        self._context = context

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._context.log.error(message)
        elif record.levelno >= logging.WARNING:
            self._context.log.warning(message)
        else:
            self._context.log.info(message)


@contextlib.contextmanager
def forward_core_logs(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> Iterator[None]:
    logger = logging.getLogger(_CORE_LOGGER)
    handler = _DagsterLogHandler(context)
    previous_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)

"""Logging of every process (README, Settings): ``XP_LOG_LEVEL`` and ``XP_LOG_FORMAT``.

``TEXT`` (the default) is one human-readable line per record; ``JSON`` is one JSON object per
line (python-json-logger) with ``time``, ``level``, ``logger`` and ``message``, and the
``stage``, ``group``, ``partition`` and ``offset`` a record concerns where they apply (absent
elsewhere): set for a block of work with :func:`log_context` (the batch reader per source
partition, a sink per batch) or per call with ``extra={"offset": ...}``. Faust's, mode's and
aiokafka's loggers propagate to the root logger, so they are formatted alike: the worker
hands :func:`logging_config` to Faust's worker, which applies it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

from streams.settings import Settings, variable

CONTEXT_FIELDS = ("stage", "group", "partition", "offset")
"""The fields a JSON record carries when the work it reports concerns them (any other
``extra`` is carried too)."""

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "xp_log_context", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Records logged inside the block carry ``fields`` (of :data:`CONTEXT_FIELDS`) in JSON
    (nested blocks add to the outer one's). Task-local (a context variable)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the fields of :func:`log_context` to each record that does not have them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def logging_config(settings: Settings) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict: the root logger at ``settings.log_level``,
    one handler to stderr in ``settings.log_format`` (a fresh dict on each call: Faust's
    worker edits the one it is given)."""
    if settings.log_format == "JSON":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "default", "filters": ["context"]}},
        "root": {"level": settings.log_level, "handlers": ["stderr"]},
    }


def setup(settings: Settings, default_level: str | None = None) -> None:
    """Configure logging for this process from ``settings``; ``default_level`` replaces the
    level when ``XP_LOG_LEVEL`` is unset (the harness's commands log warnings only)."""
    config = logging_config(settings)
    if default_level is not None and variable("log_level").read() is None:
        config["root"]["level"] = default_level
    logging.config.dictConfig(config)

"""Starting the worker process again in place (exec: same PID, no exit for a supervisor to
see) when Faust is stuck in a way only a fresh process cures (docs/design.md, "Fold worker"):
a broker lost inside Faust's own start (its bootstrap does not retry, and Faust cannot start
twice in one process), or a table recovery that never completes after a broker restart.
Nothing is lost: a worker reads nothing before its tables are recovered, and what it read
before is behind a durable position."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from aiokafka.errors import KafkaError

from streams.settings import START_ATTEMPT

log = logging.getLogger(__name__)

START_ATTEMPT_ENV = START_ATTEMPT.name
"""Environment variable counting the starts of this process image (internal, not a setting)."""

MAX_START_ATTEMPTS = 5
"""Starts in place in a row; past them the worker exits 1 for its supervisor."""


def broker_lost(reason: BaseException | None) -> bool:
    """True when Faust's start crashed because a broker went away (a Kafka client error or a
    refused/reset connection), not because of a bug or a setting."""
    return isinstance(reason, (KafkaError, ConnectionError, asyncio.TimeoutError))


def start_again(why: str) -> None:
    """Exec this process again from scratch after a backoff (1, 2, 4, 8, 10 s); the new image
    waits for a broker as every start does (``XP_BROKER_WAIT_SECONDS``). Returns, having
    logged why, after :data:`MAX_START_ATTEMPTS` such starts in a row (the caller then exits).
    """
    attempt = int(os.environ.get(START_ATTEMPT_ENV, "1"))
    if attempt >= MAX_START_ATTEMPTS:
        log.critical("%s; started again %d times in a row already: giving up", why, attempt)
        return
    log.warning("%s: starting again (%d of %d)", why, attempt + 1, MAX_START_ATTEMPTS)
    logging.shutdown()
    os.environ[START_ATTEMPT_ENV] = str(attempt + 1)
    time.sleep(min(2.0 ** (attempt - 1), 10.0))
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 (our argv)

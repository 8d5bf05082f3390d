"""Connections to PostgreSQL and the one place that maps driver errors to the project's errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg

from streams.errors import DatabaseUnavailable
from streams.settings import redact_url

CONNECT_TIMEOUT_S = 5
"""Seconds to wait for a new connection before calling the database unavailable."""

TRANSIENT = (psycopg.OperationalError, psycopg.errors.AdminShutdown, psycopg.InterfaceError)
"""Driver errors that mean "the database is (briefly) unreachable": retry, do not crash."""


def _line(exc: BaseException) -> str:
    """The driver's message on one line (libpq adds hints on further lines)."""
    return " ".join(str(exc).split())


def connect(url: str, autocommit: bool = False) -> psycopg.Connection:
    """Open a blocking connection. Raises :class:`DatabaseUnavailable` when it cannot."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
    except TRANSIENT as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {_line(exc)}") from None


async def aconnect(url: str, autocommit: bool = False) -> psycopg.AsyncConnection:
    """Open an asyncio connection. Raises :class:`DatabaseUnavailable` when it cannot."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S
        )
    except TRANSIENT as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {_line(exc)}") from None


@contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Turn transient driver errors raised inside the block into :class:`DatabaseUnavailable`."""
    try:
        yield
    except TRANSIENT as exc:
        raise DatabaseUnavailable(f"database {redact_url(url)} unavailable: {_line(exc)}") from exc


@asynccontextmanager
async def session(url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """An asyncio connection closed on exit, with transient errors mapped."""
    conn = await aconnect(url)
    try:
        with mapped_errors(url):
            yield conn
    finally:
        await conn.close()

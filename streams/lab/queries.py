"""The harness's named SQL (``queries.sql`` beside this module; the format of
:mod:`streams.db.queries`): outcome checks, the bench's baselines, chaos faults."""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from streams.db.queries import named_queries

_FILE = Path(__file__).with_name("queries.sql")


def lab_query(name: str, **identifiers: str) -> sql.Composed:
    """Query ``name`` with its ``{identifier}`` slots filled (``table="naive_events"``),
    quoted as SQL identifiers. Raises ``KeyError`` for an unknown name or slot."""
    return sql.SQL(named_queries(_FILE)[name]).format(
        **{k: sql.Identifier(v) for k, v in identifiers.items()})

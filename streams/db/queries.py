"""Named SQL queries loaded from ``queries.sql`` (``-- name: X`` blocks): SQL stays in .sql."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("queries.sql")


@cache
def _all() -> dict[str, str]:
    text = _FILE.read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    pairs = zip(parts[1::2], parts[2::2], strict=True)
    return {name: body.strip().rstrip(";") for name, body in pairs}


def query(name: str) -> str:
    """Return the SQL text of query ``name``. Raises ``KeyError`` for an unknown name."""
    return _all()[name]

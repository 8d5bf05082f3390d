"""Named SQL queries loaded from ``.sql`` files (``-- name: X`` blocks): SQL stays in .sql.
The product's are in ``queries.sql`` beside this module (:func:`query`); the harness keeps its
own file the same way (``streams/lab/queries.sql``)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("queries.sql")


@cache
def named_queries(path: Path) -> dict[str, str]:
    """Query name -> SQL text of the ``-- name: X`` blocks of the file at ``path`` (a final
    semicolon dropped; comments kept). Raises ``OSError`` when it cannot be read."""
    parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(), flags=re.MULTILINE)
    pairs = zip(parts[1::2], parts[2::2], strict=True)
    return {name: body.strip().rstrip(";") for name, body in pairs}


def query(name: str) -> str:
    """Return the SQL text of query ``name``. Raises ``KeyError`` for an unknown name."""
    return named_queries(_FILE)[name]

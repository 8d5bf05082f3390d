"""The vector progress fold: action events -> one progress state per (profile, vector, version).

Semantics (README "Action events and vector progress"; the migration plan's ``vector_progress``):

- an action event with ``completed_at`` advances its vector by one step: ``step_index`` is the
  number of distinct completed actions in the vector (0 = at the first step);
- an action whose ``action_id`` is :data:`DRAFT_SKIP` marks the vector's draft sequence as
  skipped: ``draft_skipped_at`` is the earliest ``selected_at`` of such actions; it does not
  advance the step;
- any other action (selected, not completed) changes neither, but the row exists from it on.
- The sequence version is the event's ``metadata.sequence_version`` (default ``v1``).

Both rules are counts and minimums over distinct event ids, so the result does not depend on
the order the events arrive in (order-safe), and a duplicate (same id, deduplicated upstream)
or a re-delivered record (its position at or before the last applied one) changes nothing
(idempotent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson

from streams.events import ActionEvent

DRAFT_SKIP = "draft_skip"
"""The ``action_id`` of a skip of a vector's draft sequence."""


@dataclass(frozen=True)
class Progress:
    """Progress of one profile in one vector and sequence version (a row of ``vector_progress``).

    Times are seconds since the epoch (float); None: not set.
    """

    profile_id: str
    vector: str
    version: str
    step_index: int = 0
    """Completed distinct actions in the vector: the 0-based index of the current step."""
    draft_skipped_at: float | None = None
    """Earliest ``selected_at`` of a draft skip, or None."""
    created_at: float = 0.0
    """When the first event of this row was folded (worker clock)."""
    updated_at: float = 0.0
    """When the last event was folded (worker clock)."""
    applied: int = 0
    """Events folded: the PostgreSQL upsert's guard (a row never moves backwards)."""
    partition: int = -1
    offset: int = -1
    """Source position of the last folded event (re-delivery detection)."""


def progress_key(event: ActionEvent) -> bytes:
    """The table key of ``event``'s progress row: ``profile_id|vector|version`` (UTF-8)."""
    return f"{event.profile_id}|{event.vector}|{event.sequence_version}".encode()


def already_applied(current: Progress | None, partition: int, offset: int) -> bool:
    """Whether the record at ``partition``/``offset`` is folded into ``current`` already (a
    profile's records are in one partition, folded in offset order)."""
    return (current is not None and current.partition == partition
            and offset <= current.offset)


def fold(current: Progress | None, event: ActionEvent, partition: int, offset: int,
         now: float) -> Progress:
    """Return ``current`` (None: no row yet) with ``event`` (at ``partition``/``offset``)
    folded in, by the rules of the module docstring."""
    if current is None:
        current = Progress(event.profile_id, event.vector, event.sequence_version,
                           created_at=now)
    step, skipped = current.step_index, current.draft_skipped_at
    if event.action_id == DRAFT_SKIP:
        at = event.selected_at.timestamp()
        skipped = at if skipped is None else min(skipped, at)
    elif event.completed_at is not None:
        step += 1
    return Progress(current.profile_id, current.vector, current.version, step, skipped,
                    current.created_at, now, current.applied + 1, partition, offset)


def encode_progress(progress: Progress) -> bytes:
    """The changelog value of ``progress`` (JSON)."""
    return orjson.dumps(asdict(progress))


def decode_progress(value: bytes) -> Progress:
    """Inverse of :func:`encode_progress`. Raises ``ValueError``/``TypeError`` if unreadable."""
    return Progress(**orjson.loads(value))


def iso(seconds: float | None) -> datetime | None:
    """A time in seconds since the epoch as an aware datetime (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

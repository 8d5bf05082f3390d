"""Progress writer: the worker's vector progress changelog -> PostgreSQL ``vector_progress``
(:class:`streams.sink.LatestPerKeyWriter`). Each changelog record holds a whole
:class:`streams.actions.fold.Progress`; the newest has folded the most events (``applied``)."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.actions.fold import Progress, decode_progress, iso
from streams.sink import LatestPerKeyWriter, Row


def progress_row(p: Progress) -> Row:
    """The ``copy_progress`` row of ``p``."""
    return (p.profile_id, p.vector, p.version, p.step_index, iso(p.draft_skipped_at),
            datetime.fromtimestamp(p.created_at, UTC), datetime.fromtimestamp(p.updated_at, UTC),
            p.applied)


class ProgressWriter(LatestPerKeyWriter[Progress]):
    """The progress writer."""

    name = "progress"

    def decode(self, value: bytes) -> Progress:
        """A changelog value."""
        return decode_progress(value)

    def version(self, value: Progress) -> int:
        """Events folded into it."""
        return value.applied

    def row(self, key: bytes, value: Progress) -> Row:
        """The ``vector_progress`` row (the key is inside the value)."""
        return progress_row(value)

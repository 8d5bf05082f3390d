"""Grant writer: the worker's grant state changelog -> ``xp_streaks`` and ``xp_users``
(:class:`streams.sink.LatestPerKeyWriter`). Each changelog record holds a student's whole
:class:`streams.grant.decide.GrantState`; the newest has applied the most decisions
(``version``)."""

from __future__ import annotations

from streams.grant.decide import GrantState, to_datetime
from streams.sink import LatestPerKeyWriter, Row


class GrantWriter(LatestPerKeyWriter[GrantState]):
    """The grant writer."""

    name = "grant"

    def decode(self, value: bytes) -> GrantState:
        """A changelog value."""
        return GrantState.from_json(value)

    def version(self, value: GrantState) -> int:
        """Decisions applied."""
        return value.version

    def row(self, key: bytes, value: GrantState) -> Row:
        """The ``copy_grant`` row of the student ``key``."""
        pending_from = None if value.pending_at is None else to_datetime(value.pending_at)
        return (key.decode(), value.reward_tz, value.segment, value.pending_tz, pending_from,
                value.current_streak, value.longest_streak, value.last_day, value.grace_used,
                value.grace_tokens, value.to_json().decode(), value.version)

"""Totals writer: the worker's totals changelog -> PostgreSQL ``xp_totals``
(:class:`streams.sink.LatestPerKeyWriter`). Each changelog record holds a student's whole
:class:`streams.xp.fold.Totals`; the newest is the highest ``version``."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.sink import LatestPerKeyWriter, Row
from streams.xp.fold import Totals, decode_totals


def totals_row(student_id: str, t: Totals) -> Row:
    """The ``copy_totals`` row (columns of ``xp_totals``) of one student's totals."""
    last_at = (None if t.last_game_at_us is None
               else datetime.fromtimestamp(t.last_game_at_us / 1e6, UTC))
    return (student_id, t.total_xp, t.games_played, t.last_game_type, last_at,
            datetime.fromtimestamp(t.updated_at, UTC), t.version, t.seasonal_xp, t.season_id)


class TotalsWriter(LatestPerKeyWriter[Totals]):
    """The totals writer; exports the newest ``updated_at`` written."""

    name = "totals"
    upsert_params = {"replace_equal": False, "force": False}

    def decode(self, value: bytes) -> Totals:
        """A changelog value."""
        return decode_totals(value)

    def version(self, value: Totals) -> int:
        """The totals' version (events folded)."""
        return value.version

    def row(self, key: bytes, value: Totals) -> Row:
        """The ``xp_totals`` row of the student ``key``."""
        return totals_row(key.decode(), value)

    def wrote(self, latest: dict[bytes, Totals]) -> None:
        """Export the newest ``updated_at`` written (seconds since the epoch)."""
        self.metrics.totals_newest.set(max(t.updated_at for t in latest.values()))

"""Audit ranges: durations, instants, offsets, and what retention dropped.

The dropped-range rule is tested here on its own (the replay over a log start moved by
DeleteRecords, in tests/integration/test_audit.py); the replay compares only the offsets it
read either way."""

from __future__ import annotations

import pytest

from streams.audit.ranges import parse_duration, parse_instant, parse_offsets, retention_dropped


def test_durations_and_instants() -> None:
    assert parse_duration("90s") == 90 and parse_duration("24h") == 86400
    assert parse_duration("2w") == 14 * 86400 and parse_duration("1.5") == 1.5
    assert parse_instant("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_instant("2026-11-20T10:00:00+01:00") == parse_instant("2026-11-20T09:00:00Z")
    with pytest.raises(ValueError, match="neither RFC 3339"):
        parse_instant("2026-11-20T10:00:00")  # no offset: ambiguous
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_offsets() -> None:
    assert parse_offsets(["0:10,1:20", "3:0"]) == {0: 10, 1: 20, 3: 0}
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        parse_offsets(["0-10"])


@pytest.mark.parametrize(("requested", "since", "log_start", "first_ts", "dropped"), [
    (None, None, 0, None, False),       # whole partition, nothing deleted
    (None, None, 100, 5.0, True),       # whole partition, the beginning is gone
    (50, None, 100, 5.0, True),         # asked from offset 50, broker keeps from 100
    (150, None, 100, 5.0, False),
    (None, 10.0, 100, 5.0, False),      # first kept record is older than since: window intact
    (None, 10.0, 100, 20.0, True),      # first kept record is newer: part of the window gone
    (None, 10.0, 0, None, False),
])
def test_retention_dropped(requested: int | None, since: float | None, log_start: int,
                           first_ts: float | None, dropped: bool) -> None:
    assert retention_dropped(requested, since, log_start, first_ts) is dropped

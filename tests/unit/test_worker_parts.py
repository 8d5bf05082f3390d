"""The fold worker's pure parts: the DLQ limit, the failpoint spec, positions, their settings."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.topics import decode_position, encode_position, position_key
from streams.worker.checkpoint import Failpoint
from streams.worker.reader import DlqLimit


def test_dlq_limit_off_never_trips() -> None:
    limit = DlqLimit(0.0, 10)
    assert not any(limit.add(100, 100) for _ in range(5))


def test_dlq_limit_needs_a_full_window_then_trips_past_the_share() -> None:
    limit = DlqLimit(0.5, 100)
    assert not limit.add(50, 50)  # 100% invalid, but the window is not full yet
    assert not limit.add(50, 0)  # 50% of 100: not past the share
    assert limit.add(10, 10)  # 60 of 110 (the oldest batch is still needed for 100 records)
    assert limit.share == pytest.approx(60 / 110)


def test_dlq_limit_forgets_batches_older_than_the_window() -> None:
    limit = DlqLimit(0.2, 100)
    assert not limit.add(100, 15)
    assert not limit.add(100, 0)  # the 15 fell out of the window
    assert limit.share == 0.0
    assert limit.add(100, 30)


def test_failpoint_spec() -> None:
    assert Failpoint("").points == {}
    point = Failpoint("positioned:3:1.5")
    assert point.points == {"positioned": (3, "1.5")}
    assert Failpoint("folded:1:stop,produced:2").points == {"folded": (1, "stop"),
                                                           "produced": (2, "")}
    for bad in ("produced", "folded:1:later", "stored:1"):
        with pytest.raises(ValueError, match="XP_WORKER_FAILPOINT"):
            Failpoint(bad)
    for good in ("positioned:3:1.5", "folded:1:stop,produced:2", "folded:2:60,produced:2"):
        assert Settings.from_env({"XP_WORKER_FAILPOINT": good}).worker_failpoint == good


@pytest.mark.parametrize("spec", ["produced", "stored:1", "produced:0", "produced:x", "a:1:b",
                                  "folded:1,", "folded:1:go"])
def test_a_bad_failpoint_setting_is_one_clear_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="XP_WORKER_FAILPOINT"):
        Settings.from_env({"XP_WORKER_FAILPOINT": spec})


@pytest.mark.parametrize("value", ["-0.1", "1.5", "x"])
def test_the_dlq_limit_is_a_share(value: str) -> None:
    with pytest.raises(ConfigError, match="XP_WORKER_DLQ_LIMIT"):
        Settings.from_env({"XP_WORKER_DLQ_LIMIT": value})


def test_positions_round_trip_and_keys_name_topic_and_partition() -> None:
    assert decode_position(encode_position(12_345)) == 12_345
    assert position_key("xp-events", 7) == b"xp-events/7"
    assert position_key("xp-events", 1) != position_key("xp-events", 11)

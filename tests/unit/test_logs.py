"""Logging as XP_LOG_LEVEL and XP_LOG_FORMAT say (streams.logs): JSON lines carry the work's
stage, group, partition and offset where they apply; every logger is formatted alike."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import orjson
import pytest

from streams.logs import log_context, logging_config
from streams.settings import Settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's configuration is restored after the test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def configure(settings: Settings, out: io.StringIO) -> None:
    config = logging_config(settings)
    config["handlers"]["stderr"]["stream"] = out
    logging.config.dictConfig(config)


def test_json_lines_carry_the_context_where_it_applies(captured: io.StringIO) -> None:
    configure(Settings(log_format="JSON"), captured)
    logging.getLogger("streams.probe").info("outside any work")
    with log_context(stage="xp", group="xp-streams-worker", partition=3):
        logging.getLogger("streams.xp.stream").warning("conflict", extra={"offset": 41})
    first, second = (orjson.loads(line) for line in captured.getvalue().splitlines())
    assert first["logger"] == "streams.probe" and first["level"] == "INFO"
    assert first["message"] == "outside any work" and "time" in first
    assert not {"stage", "group", "partition", "offset"} & set(first)
    assert {k: second[k] for k in ("stage", "group", "partition", "offset", "level")} == {
        "stage": "xp", "group": "xp-streams-worker", "partition": 3, "offset": 41,
        "level": "WARNING"}


def test_text_is_the_default_and_the_level_holds(captured: io.StringIO) -> None:
    configure(Settings.from_env({"XP_LOG_LEVEL": "warning"}), captured)
    logging.getLogger("streams.probe").info("quiet")
    logging.getLogger("streams.probe").warning("loud")
    (line,) = captured.getvalue().splitlines()
    assert line.endswith(" WARNING streams.probe: loud")

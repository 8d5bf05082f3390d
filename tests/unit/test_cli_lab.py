"""``streams lab demo|chaos|hostile --local``: the throwaway stack runs the pipeline with the
environment's settings (its tuning), pointed at its own servers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.dev.stack import LocalStack
from streams.settings import Settings


class Started(Exception):
    """Raised by the patched :meth:`LocalStack.start` in place of starting any server."""


@pytest.mark.parametrize("args", [["demo"], ["chaos", "--local"], ["hostile", "--local"]])
def test_a_local_lab_command_keeps_the_environments_tuning(
        args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    def start(self: LocalStack, detach: bool = False) -> Settings:
        seen.append(self.settings)
        raise Started

    monkeypatch.setattr(LocalStack, "start", start)
    env = {"XP_WORKER_CHECKPOINT_RECORDS": "7", "XP_SINK_BATCH_SECONDS": "0.3"}
    result = CliRunner().invoke(main, ["lab", *args, "--partitions", "3"], env=env)
    assert isinstance(result.exception, Started), result.output
    (settings,) = seen
    assert (settings.worker_checkpoint_records, settings.sink_batch_seconds,
            settings.topic_partitions) == (7, 0.3, 3)

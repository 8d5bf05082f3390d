"""The pipeline's stages: which consumer group reads which topic into which writer
(docs/design.md, Data flow). The one list: the CLI builds the sinks from it, and monitor,
status, reconciliation, the demo and the bench read their (group, topic) pairs from it.

Ground module: no I/O, no imports of the stream packages (writers and streams are named,
and imported by :func:`build_writer` and :func:`build_streams` when a process starts).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.metrics import Metrics
    from streams.sink import BatchWriter
    from streams.worker.reader import FoldStream


@dataclass(frozen=True)
class Stage:
    """One consumer of the pipeline."""

    name: str
    """What operators call it (``ledger sink``, ``totals writer``)."""
    command: str
    """The ``streams`` command that runs it."""
    group: str
    """Its consumer group (committed offsets, lag)."""
    topic: str
    """The topic it reads."""
    writer: str | None = None
    """Sinks: ``module:Class`` of its :class:`streams.sink.BatchWriter`."""
    stream: str | None = None
    """The fold worker: ``module:Class`` of the :class:`streams.worker.reader.FoldStream` its
    batch reader runs over this topic (docs/design.md, Fold worker)."""


def stages(settings: Settings) -> tuple[Stage, ...]:
    """Every stage in data-flow order: the fold worker once per topic it reads, then the
    sinks."""
    s = settings
    return (
        Stage("fold worker", "worker", s.worker_group, s.xp_topic,
              stream="streams.xp.stream:XpStream"),
        Stage("ledger sink", "sink", s.ledger_group, s.xp_topic,
              "streams.xp.ledger:LedgerWriter"),
        Stage("totals writer", "totals-writer", s.totals_group, s.totals_changelog_topic,
              "streams.xp.totals:TotalsWriter"),
        Stage("fold worker", "worker", s.worker_group, s.action_topic,
              stream="streams.actions.stream:ActionStream"),
        Stage("action ledger sink", "action-sink", s.action_ledger_group, s.action_topic,
              "streams.actions.ledger:ActionLedgerWriter"),
        Stage("progress writer", "progress-writer", s.progress_group,
              s.progress_changelog_topic, "streams.actions.progress:ProgressWriter"),
        Stage("fold worker", "worker", s.worker_group, s.claims_topic,
              stream="streams.grant.stream:GrantStream"),
        Stage("award sink", "award-sink", s.award_group, s.outcomes_topic,
              "streams.grant.awards:AwardWriter"),
        Stage("grant writer", "grant-writer", s.grant_group, s.grant_changelog_topic,
              "streams.grant.streaks:GrantWriter"),
        Stage("rules sink", "rules-sink", s.rules_group, s.policies_topic,
              "streams.grant.rules:RulesWriter"),
    )


def group_topics(settings: Settings, topic: str | None = None) -> list[tuple[str, str]]:
    """The (consumer group, topic) pairs of every stage, or of the stages reading ``topic``."""
    return [(st.group, st.topic) for st in stages(settings) if topic in (None, st.topic)]


def sink(settings: Settings, command: str) -> Stage:
    """The sink stage run by ``command``.

    Raises:
        KeyError: no sink stage has that command.
    """
    for st in stages(settings):
        if st.command == command and st.writer is not None:
            return st
    raise KeyError(command)


def build_writer(stage: Stage, settings: Settings, metrics: Metrics) -> BatchWriter:
    """Import the writer class a sink stage names and build it for ``settings``
    (``from_settings``, :class:`streams.sink.LedgerRowsWriter` or
    :class:`streams.sink.LatestPerKeyWriter`).

    Raises:
        ValueError: the stage has no writer (the fold worker).
    """
    if stage.writer is None:
        raise ValueError(f"{stage.name} has no writer")
    writer: BatchWriter = _resolve(stage.writer).from_settings(settings, metrics)
    return writer


def build_streams(settings: Settings, app: Any, metrics: Metrics) -> list[FoldStream]:
    """The fold worker's streams, one per topic it reads, built over the Faust ``app``."""
    return [_resolve(st.stream)(app, settings, metrics)
            for st in stages(settings) if st.stream is not None]


def _resolve(dotted: str) -> Any:
    """The object named ``module:attribute``."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)

"""The pipeline's processes: ``streams worker`` and the sinks, each built for its stage of
the topology (docs/design.md, Data flow). Where the stream packages' classes meet the
topology: :func:`writers` names each sink command's writer, :func:`fold_streams` the worker's
stream of each source topic (a contract test checks both against
:func:`streams.topology.stages`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from streams.cli.base import (
    load_settings,
    main,
    run_until_signal,
    setup_logging,
)

if TYPE_CHECKING:
    from streams.metrics import Metrics
    from streams.settings import Settings
    from streams.sink import BatchWriter
    from streams.worker.reader import StreamFactory


def writers() -> dict[str, Callable[[Settings, Metrics], BatchWriter]]:
    """Sink command -> the factory of its writer (``Writer.from_settings``). Imported when a
    process starts, so ``streams --help`` stays quick."""
    from streams.actions.ledger import ActionLedgerWriter
    from streams.actions.progress import ProgressWriter
    from streams.grant.awards import AwardWriter
    from streams.grant.rules import RulesWriter
    from streams.grant.streaks import GrantWriter
    from streams.xp.ledger import LedgerWriter
    from streams.xp.totals import TotalsWriter

    return {"sink": LedgerWriter.from_settings, "totals-writer": TotalsWriter.from_settings,
            "action-sink": ActionLedgerWriter.from_settings,
            "progress-writer": ProgressWriter.from_settings,
            "award-sink": AwardWriter.from_settings, "grant-writer": GrantWriter.from_settings,
            "rules-sink": RulesWriter.from_settings}


def fold_streams() -> list[StreamFactory]:
    """The fold worker's streams, in the order of the topology's source topics (XP, actions,
    claims)."""
    from streams.actions.stream import ActionStream
    from streams.grant.stream import GrantStream
    from streams.xp.stream import XpStream

    return [XpStream, ActionStream, GrantStream]


@main.command()
def worker() -> None:
    """Run the fold worker: validate, DLQ, dedupe, fold XP into the totals table and action
    events into vector progress (Faust tables, batch reader)."""
    from streams.health import Health, serve
    from streams.metrics import Metrics
    from streams.worker.app import run

    setup_logging()  # before Faust's worker takes over with the same configuration
    settings = load_settings()
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health)
    run(settings, metrics, fold_streams(), health)


def _run_sink(command: str) -> None:
    """Run the sink stage of ``command`` (:func:`streams.topology.sink`) until SIGTERM."""
    from streams import topology
    from streams.health import Health, serve
    from streams.metrics import Metrics
    from streams.sink import PostgresSink

    setup_logging()
    settings = load_settings()
    metrics, health = Metrics(), Health()
    stage = topology.sink(settings, command)
    make = writers()[command]
    sink = PostgresSink(settings, stage.topic, stage.group, make(settings, metrics), metrics,
                        scratch=lambda: make(settings, Metrics()))
    health.set_readiness(sink.readiness)
    serve(settings.metrics_port, metrics.registry, health)
    run_until_signal(sink.run, health)


@main.command()
def sink() -> None:
    """Run the ledger sink: XP topic -> PostgreSQL xp_events (its own consumer group)."""
    _run_sink("sink")


@main.command("totals-writer")
def totals_writer() -> None:
    """Run the totals writer: the worker's totals changelog -> PostgreSQL xp_totals."""
    _run_sink("totals-writer")


@main.command("action-sink")
def action_sink() -> None:
    """Run the action ledger sink: action topic -> PostgreSQL action_events."""
    _run_sink("action-sink")


@main.command("progress-writer")
def progress_writer() -> None:
    """Run the progress writer: the worker's vector progress changelog -> vector_progress."""
    _run_sink("progress-writer")


@main.command("award-sink")
def award_sink() -> None:
    """Run the award sink: claim outcomes -> xp_claim_outcomes and xp_awards."""
    _run_sink("award-sink")


@main.command("rules-sink")
def rules_sink() -> None:
    """Run the rules sink: the policies topic -> xp_rules and xp_seasons (accepted records)."""
    _run_sink("rules-sink")


@main.command("grant-writer")
def grant_writer() -> None:
    """Run the grant writer: the worker's grant state changelog -> xp_streaks and xp_users."""
    _run_sink("grant-writer")

"""The pipeline's processes: ``streams worker``, the sinks built from the topology
(docs/design.md, Data flow)."""

from __future__ import annotations

from streams.cli.base import (
    load_settings,
    main,
    run_until_signal,
    setup_logging,
)


@main.command()
def worker() -> None:
    """Run the fold worker: validate, DLQ, dedupe, fold XP into the totals table and action
    events into vector progress (Faust tables, batch reader)."""
    from streams.health import Health, serve
    from streams.metrics import Metrics
    from streams.worker.app import run

    settings = load_settings()
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health)
    run(settings, metrics, health)


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
    writer = topology.build_writer(stage, settings, metrics)
    sink = PostgresSink(settings, stage.topic, stage.group, writer, metrics,
                        scratch=lambda: topology.build_writer(stage, settings, Metrics()))
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

"""The worker process: a Faust app with the streams' tables and no agents, and the batch reader
(docs/design.md, "Fold worker").

With no agents, Faust's consumer group (:func:`streams.topics.tables_group`) subscribes only
the table changelogs; its assignor co-partitions them, so partition p of every table lands on
one worker, and it recovers them after every rebalance. The reader then reads partition p of
each source topic (:mod:`streams.worker.reader`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

import faust

from streams import kafka, logs, topics, topology
from streams.errors import ConfigError
from streams.health import Health
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.reader import SourceReader, StreamFactory
from streams.worker.restart import broker_lost, start_again
from streams.worker.state import TableState, new_table

log = logging.getLogger(__name__)


METADATA_MAX_AGE_MS = 10_000
"""How often the worker's group consumer refreshes topic metadata (milliseconds): the bound on
a stall after a group leader assigned against a broker that had not loaded its topics yet."""


def faust_broker_urls(settings: Settings) -> list[str]:
    """Faust's form of the bootstrap list: ``kafka://host:port`` each."""
    return [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")]


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (app id = :func:`streams.topics.tables_group`)."""
    credentials: Any = None
    client = kafka.client_kwargs(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=client["sasl_mechanism"], ssl_context=client.get("ssl_context"),
        )
    elif settings.kafka_security_protocol == "SSL":
        credentials = faust.SSLCredentials(client["ssl_context"])
    return faust.App(
        topics.tables_group(settings.worker_group),
        broker=faust_broker_urls(settings),
        broker_credentials=credentials,
        store=settings.table_store,
        datadir=settings.data_dir,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # The changelogs are created before Faust starts (kafka.changelog_topics). Faust's own
        # declaration, repeated on every rebalance, asks the node the metadata names as the
        # controller: with that node down (one of three killed) the worker crashed with
        # NodeNotReadyError. The leader topic serves on_leader timers, which we do not use.
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=max(0.5, settings.broker_session_timeout / 5),
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.worker_instance_id or None,
        # A group leader that assigns while a restarted broker has not yet loaded its
        # partitions sees the changelogs as missing ("Ignoring missing topic") and assigns
        # nothing; only its next metadata refresh notices the topics and rebalances. With
        # Kafka's default of 5 minutes a broker restart stalled the worker that long.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        web_enabled=False,
        table_standby_replicas=settings.worker_standby_replicas,
    )


def build(settings: Settings, metrics: Metrics,
          streams: Sequence[StreamFactory]) -> tuple[faust.App, SourceReader]:
    """Create the app, the ``streams`` (one per source topic of the topology, in its order:
    ``streams.cli.pipeline`` hands them over), their tables, the positions table and the
    reader, wired to Faust's rebalance signals.

    Raises:
        FaustMismatch: the installed faust-streaming is not the pinned one.
        ConfigError: the streams' topics are not the topology's source topics.
    """
    faust_internals.patch_all(settings)
    metrics.rocksdb_memory.set_function(faust_internals.rocksdb_memory_bytes)
    app = create_app(settings)
    if settings.faust_sensor:
        from faust.sensors.prometheus import setup_prometheus_sensors

        setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    positions: TableState[int] = TableState(
        new_table(app, settings, topics.POSITIONS_TABLE), topics.encode_position,
        topics.decode_position)
    built = [make(app, settings, metrics) for make in streams]
    expected = topology.source_topics(settings)
    if [st.topic for st in built] != expected:
        raise ConfigError(f"the worker's streams read {[st.topic for st in built]}; the "
                          f"topology's source topics are {expected}")
    reader = SourceReader(settings, metrics, built, positions)

    @positions.table.on_recover  # type: ignore[untyped-decorator]
    async def on_recover() -> None:
        await reader.on_recovered(app)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await reader.on_revoked()

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await reader.on_assigned(app)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)
    return app, reader


def run(settings: Settings, metrics: Metrics, streams: Sequence[StreamFactory],
        health: Health | None = None) -> None:
    """Run the worker with ``streams`` (:func:`build`) until SIGTERM/SIGINT: the reader
    checkpoints its batch in progress and closes before Faust leaves the group. ``health``
    watches Faust's event loop and asks the reader whether it is ready
    (:meth:`streams.worker.reader.SourceReader.readiness`).

    Waits first for a broker (:func:`streams.kafka.wait_for_brokers`) and creates the grant
    stream's topics and the table changelogs. Raises
    :class:`streams.errors.BrokerUnavailable` when none answers in time."""
    async def prepare() -> None:
        await kafka.wait_for_brokers(settings, log)
        await kafka.grant_topics(settings)
        await kafka.changelog_topics(settings)

    asyncio.run(prepare())
    app, reader = build(settings, metrics, streams)
    if health is not None:
        health.set_readiness(reader.readiness)

    class Worker(faust.Worker):
        started = False
        """Set when Faust's start-up (group join, table recovery) has finished."""
        start_error: BaseException | None = None
        """What Faust's start raised (its bootstrap raises rather than crashing a service)."""

        async def start(self) -> None:
            try:
                await super().start()
            except Exception as exc:
                self.start_error = exc
                raise

        async def on_first_start(self) -> None:
            if health is not None:
                health.watch(self.loop)
            reader.watch_start(app)  # the start-up deadline (XP_WORKER_RECOVERY_TIMEOUT_SECONDS)
            await super().on_first_start()

        async def on_stop(self) -> None:
            await reader.stop()
            await super().on_stop()

        def install_signal_handlers(self) -> None:
            # Until start-up has finished (tables recovered), SIGTERM ends the process at once:
            # nothing has been read, and Faust stopped halfway through its start crashed
            # (its conductor subscribing to no topics) and exited 1.
            super().install_signal_handlers()
            self.loop.add_signal_handler(signal.SIGTERM, self.exit_during_startup)

        def exit_during_startup(self) -> None:
            log.info("SIGTERM during start-up: nothing read yet; exiting")
            logging.shutdown()
            os._exit(0)

        async def on_startup_finished(self) -> None:
            self.started = True
            await super().on_startup_finished()
            super().install_signal_handlers()  # from now on SIGTERM stops gracefully

        def on_worker_shutdown(self) -> None:
            # Shutdown has begun (the reader checkpoints in on_stop). Closing the loop would
            # put SIGTERM back to its default, so a SIGTERM repeated by a supervisor in that
            # moment ended the exit with status -15: drop the loop's handler and ignore it.
            self.loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            super().on_worker_shutdown()

    worker = Worker(app, loglevel=settings.log_level, quiet=True, console_port=0,
                    logging_config=logs.logging_config(settings))
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        reason = worker.crash_reason or worker.start_error
        if exc.code and not worker.started and broker_lost(reason):
            start_again(f"a broker went away while Faust was starting ({reason!r})")
        raise
    finally:  # as the sinks do (streams.cli.base.ignore_sigterm_from_now_on): exit with our status
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

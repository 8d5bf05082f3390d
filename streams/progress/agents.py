"""The worker's action agent: validate -> DLQ | dedupe by event id -> fold into vector progress.

It runs in the worker's Faust app beside the XP agent (issue 5), on the action topic (key =
profile_id), with two tables partitioned like it:
- ``vector_progress``: ``profile|vector|version`` -> :class:`streams.progress.fold.Progress`
  (its changelog feeds the progress writer, :mod:`streams.progress.writer`);
- ``action_dedupe``: event id (16 bytes) -> first sighting (:mod:`streams.totals.dedupe`).

Crash safety is the XP agent's (:mod:`streams.totals.agents`): the delivery guard decides the
committed offset; a re-delivered record is recognised by its position (sighting, and the
progress row's last applied position) and its current state is written to the changelog again.
Unlike the XP dedupe state, action sightings are not expired (no horizon yet).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import faust
from faust.types import EventT

from streams import topics
from streams.errors import InvalidEvent
from streams.events import decode_action
from streams.metrics import Metrics
from streams.progress.fold import (
    already_applied,
    decode_progress,
    encode_progress,
    fold,
    progress_key,
)
from streams.settings import Settings
from streams.totals.agents import ChangelogWriter, dead_letter, select, store_options
from streams.totals.dedupe import Sighting, Verdict, classify, decode_sighting, encode_sighting
from streams.totals.delivery import DeliveryGuard, guard_topic

log = logging.getLogger(__name__)

STAGE = "progress"
"""The ``stage`` label of this agent's metrics."""


class ProgressWorker:
    """The action agent's processing of one record at a time; built by :func:`add_agent`."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dlq = app.topic(settings.action_dlq_topic, partitions=settings.topic_partitions)
        options = store_options(settings)
        self.progress = app.Table(topics.PROGRESS_TABLE, default=None, key_type=bytes,
                                  value_type=bytes, partitions=settings.topic_partitions,
                                  options=options)
        self.seen = app.Table(topics.ACTION_DEDUPE_TABLE, default=None, key_type=bytes,
                              value_type=bytes, partitions=settings.topic_partitions,
                              options=dict(options))
        self.progress_log = ChangelogWriter(app, self.progress)
        self.seen_log = ChangelogWriter(app, self.seen)
        self.delivery = DeliveryGuard(app, settings, metrics, topic=settings.action_topic)
        self.limits = settings.limits()

    async def process(self, event: EventT[bytes]) -> str:
        """Handle one record of the action topic; return its outcome label. Never raises for
        bad input (it goes to the action DLQ)."""
        msg = event.message
        if not await self.delivery.admit(msg.partition, msg.offset):
            return "skipped"
        outcome = await self._process(event)
        self.delivery.written()
        self.metrics.records.labels(STAGE, outcome).inc()
        return outcome

    async def _process(self, event: EventT[bytes]) -> str:
        msg = event.message
        try:
            ev = decode_action(msg.key, msg.value, self.limits,
                               (msg.partition, self.settings.topic_partitions), msg.timestamp)
        except InvalidEvent as exc:
            await dead_letter(event, exc, self.dlq, self.metrics, STAGE)
            return "invalid"
        now = time.time()
        id_key = uuid.UUID(ev.id).bytes
        select(event)
        raw_seen = self.seen.get(id_key)
        sighting = decode_sighting(raw_seen) if raw_seen is not None else None
        verdict = classify(sighting, ev.fingerprint, msg.partition, msg.offset, 0)
        if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
            if verdict is Verdict.CONFLICT:
                log.warning("conflict: action event %s at %s/%s differs from its first "
                            "sighting; the first one wins", ev.id, msg.partition, msg.offset)
            return str(verdict.value)
        key = progress_key(ev)
        raw = self.progress.get(key)
        current = decode_progress(raw) if raw is not None else None
        outcome = "redelivery"
        if current is None or not already_applied(current, msg.partition, msg.offset):
            current = fold(current, ev, msg.partition, msg.offset, now)
            outcome = "valid"
        # Written again on a re-delivery too: the changelog may not have it (module docstring).
        await self.progress_log.put(event, key, encode_progress(current))
        if sighting is None:
            sighting = Sighting(ev.fingerprint, msg.partition, msg.offset, now,
                                ev.selected_at.timestamp(), 0)
        await self.seen_log.put(event, id_key, encode_sighting(sighting))
        self.progress_log.persist_offsets()
        self.seen_log.persist_offsets()
        return outcome


def add_agent(app: faust.App, settings: Settings, metrics: Metrics) -> ProgressWorker:
    """Add the action agent (and its tables) to the worker's Faust ``app``."""
    worker = ProgressWorker(app, settings, metrics)
    source = app.topic(settings.action_topic, partitions=settings.topic_partitions)

    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust sends the revoked / the assigned partitions (a set of TP) as first argument.
        worker.delivery.forget({tp.partition for tp in args[0]
                                if tp.topic == settings.action_topic})

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)

    @app.agent(source, name="fold_actions")
    async def fold_actions(stream: faust.StreamT[bytes]) -> None:
        guard_topic(app.consumer, worker.delivery)
        async for event in stream.events():
            try:
                await worker.process(event)
            except Exception:
                # As the XP agent: never let Faust ack and skip a record after an unexpected
                # error; exit without committing, the record is re-delivered after the restart.
                log.critical("unexpected error at action record %s/%s; exiting without commit",
                             event.message.partition, event.message.offset, exc_info=True)
                logging.shutdown()
                os._exit(70)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def check_action_stalls() -> None:
        await worker.delivery.check_stalls()

    return worker

"""The action stream of the fold worker: validate -> DLQ | dedupe by event -> fold into
vector progress.

It runs in the worker beside the XP stream, on the action topic (key = profile_id), with two
tables partitioned like it:
- ``vector_progress``: ``profile|vector|version`` -> :class:`streams.actions.fold.Progress`
  (its changelog feeds the progress writer, :mod:`streams.actions.progress`);
- ``action_dedupe``: event (id and profile, :func:`streams.dedupe.event_key`, 32 bytes) ->
  first sighting (:mod:`streams.dedupe`).

Crash safety is the XP stream's (:mod:`streams.xp.stream`): a record read again is
recognised by its position (its sighting, and the progress row's last applied position), and
its current state is written to the changelog again. Unlike the XP dedupe state, action
sightings are not expired (no horizon yet).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka.structs import ConsumerRecord

from streams import topics
from streams.actions.fold import (
    Progress,
    already_applied,
    decode_progress,
    encode_progress,
    fold,
    progress_key,
)
from streams.dedupe import Sighting, Verdict, classify, decode_sighting, encode_sighting
from streams.errors import InvalidEvent
from streams.events import decode_action
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoint
from streams.worker.state import TableState, find_sighting, new_table

log = logging.getLogger(__name__)


class ActionStream:
    """The action topic's fold (:class:`streams.worker.reader.FoldStream`)."""

    stage = "progress"

    def __init__(self, app: Any, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.action_topic
        self.dlq_topic = settings.action_dlq_topic
        self.progress: TableState[Progress] = TableState(
            new_table(app, settings, topics.PROGRESS_TABLE), encode_progress, decode_progress)
        self.seen: TableState[Sighting] = TableState(
            new_table(app, settings, topics.ACTION_DEDUPE_TABLE), encode_sighting,
            decode_sighting)
        self.tables: list[TableState[Any]] = [self.progress, self.seen]
        self.limits = settings.limits()

    async def fold(self, partition: int, records: list[ConsumerRecord[bytes, bytes]],
                   checkpoint: Checkpoint, now: float) -> int:
        """Fold ``records`` of ``partition`` in order; return how many were invalid."""
        counts: Counter[str] = Counter()
        position = (partition, self.settings.topic_partitions)
        for record in records:
            try:
                ev = decode_action(record.key, record.value, self.limits, position,
                                   record.timestamp / 1000)
            except InvalidEvent as exc:
                checkpoint.dead_letter(self.dlq_topic, record, exc)
                counts["invalid"] += 1
                continue
            p, offset = record.partition, record.offset
            id_key, sighting = find_sighting(self.seen, p, ev.id, ev.profile_id)
            verdict = classify(sighting, ev.fingerprint, p, offset, 0)
            if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
                if verdict is Verdict.CONFLICT:
                    log.warning("conflict: action event %s at %s/%s differs from its first "
                                "sighting; the first one wins", ev.id, p, offset,
                                extra={"offset": offset})
                counts[verdict.value] += 1
                continue
            key = progress_key(ev)
            current = self.progress.get(p, key)
            if current is None or not already_applied(current, p, offset):
                current = fold(current, ev, p, offset, now)
                counts["valid"] += 1
            else:
                counts["redelivery"] += 1
            # Written again on a re-read too: the changelog may not have it (module docstring).
            self.progress.put(p, key, current)
            if sighting is None:
                sighting = Sighting(ev.fingerprint, p, offset, now, ev.selected_at.timestamp(), 0)
            self.seen.put(p, id_key, sighting)
        for outcome, n in counts.items():
            self.metrics.records.labels(self.stage, outcome).inc(n)
        return counts["invalid"]

    def housekeeping(self, partitions: set[int], checkpoint: Checkpoint, now: float) -> None:
        """Nothing yet: action sightings are kept (no horizon)."""

    async def close(self) -> None:
        """Nothing to close."""

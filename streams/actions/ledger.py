"""Action ledger writer: validated action events -> ``action_events``, exactly once per event
id (:class:`streams.sink.LedgerRowsWriter`, the XP ledger's path), with their provenance."""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord

from streams.events import ActionEvent, decode_action
from streams.sink import LedgerRowsWriter, Row


def action_row(ev: ActionEvent, topic: str, partition: int, offset: int) -> Row:
    """The ``copy_actions`` row of ``ev`` read at ``topic``/``partition``/``offset``."""
    return (ev.id, ev.action_id, ev.profile_id, ev.source, ev.vector, ev.qol_domain,
            ev.selected_at, ev.completed_at, ev.duration, ev.mode,
            orjson.dumps(ev.metadata or {}).decode(), ev.fingerprint, topic, partition, offset)


class ActionLedgerWriter(LedgerRowsWriter):
    """The action ledger sink's writer."""

    name = "actions"

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[tuple[str, str], Row]]:
        """The record's one action event as a row."""
        ev = decode_action(record.key, record.value, self.limits,
                           (record.partition, self.partitions), record.timestamp / 1000)
        return [((ev.id, ev.profile_id),
                 action_row(ev, record.topic, record.partition, record.offset))]

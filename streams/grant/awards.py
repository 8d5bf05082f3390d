"""Award sink: the outcomes topic -> ``xp_claim_outcomes`` (every outcome, by outcome id) and
``xp_awards`` (each ``awarded`` one, by receipt; one per learner and reward day), in the
ledger's path (:class:`streams.sink.LedgerRowsWriter`: COPY to staging, insert what is new,
offsets in the same transaction)."""

from __future__ import annotations

from datetime import datetime

import orjson
from aiokafka.structs import ConsumerRecord

from streams.errors import InvalidEvent
from streams.events import decode_document
from streams.sink import LedgerRowsWriter, Row


def outcome_row(outcome: dict[str, object], topic: str, partition: int, offset: int,
                raw: bytes) -> Row:
    """The ``copy_outcomes`` row of a decoded outcome record (``raw``: its bytes)."""
    def get(name: str) -> object:
        return outcome.get(name)

    decided = datetime.fromisoformat(str(outcome["decided_at"]).replace("Z", "+00:00"))
    return (outcome["id"], outcome["claim_id"], outcome["student_id"], outcome["type"],
            outcome["outcome"], get("reason"), decided, get("receipt_id"), get("reward_day_id"),
            raw.decode(), topic, partition, offset, get("reward_tz"), get("xp"),
            get("streak_day"), get("grace_consumed"), get("policy_id"), get("policy_version"),
            get("season_id"), get("tzdata"))


class AwardWriter(LedgerRowsWriter):
    """The award sink's writer (rows keyed by outcome id and learner)."""

    name = "outcomes"

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[tuple[str, str], Row]]:
        """The record's outcome as a row. Raises :class:`InvalidEvent` (``schema``,
        ``bad_json``, ``key_mismatch``): only the worker writes this topic, so one is a bug."""
        doc = decode_document("xp_claim_outcome.v1.json", "student_id", record.key,
                              record.value, self.limits)
        if doc["outcome"] == "awarded" and not doc.get("receipt_id"):
            raise InvalidEvent("schema", "an awarded outcome without its receipt")
        assert record.value is not None
        return [((str(doc["id"]), str(doc["student_id"])),
                 outcome_row(doc, record.topic, record.partition, record.offset,
                             orjson.dumps(doc)))]

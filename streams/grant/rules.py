"""Rules writer: the policies topic -> PostgreSQL ``xp_rules`` (policy versions) and
``xp_seasons`` (every season calendar version), a :class:`streams.sink.BatchWriter` (docs/design.md,
"Grants: seasons").

Only what the deciders accept is written: each record is judged by
:func:`streams.policy_feed.refusal` against the rules already written, which the writer reads
back inside the same transaction before a batch, so the tables hold exactly what every worker's
policy feed applied, also after a restart or a rebalance. A refused record is logged and
skipped (the workers' feeds count it in ``xp_grant_policy_records_total``).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any, Self

import orjson
import psycopg
from aiokafka.structs import ConsumerRecord

from streams.db.queries import query
from streams.metrics import Metrics
from streams.policies import Calendar, Policies, PolicyVersion, Season
from streams.policy_feed import apply, judge
from streams.settings import Settings

log = logging.getLogger(__name__)


class RulesWriter:
    """The rules sink's writer.

    Args:
        lead_seconds: the publish lead (``XP_POLICY_MIN_LEAD_SECONDS``), as the feed uses it.
    """

    name = "rules"

    def __init__(self, lead_seconds: float) -> None:
        self.lead_seconds = lead_seconds
        self._records: list[ConsumerRecord[bytes, bytes]] = []

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Self:
        """The writer for ``settings`` (``metrics`` unused: the feeds count the records)."""
        return cls(settings.policy_min_lead_seconds)

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one record of the policies topic (judged when its batch is written)."""
        self._records.append(record)

    def pending(self) -> int:
        """Records added since the last take."""
        return len(self._records)

    def take(self) -> list[ConsumerRecord[bytes, bytes]]:
        """The records added, in offset order."""
        taken, self._records = self._records, []
        return taken

    def discard(self) -> None:
        """Forget the records added."""
        self._records = []

    async def write(self, conn: psycopg.AsyncConnection[Any],
                    records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Judge ``records`` in order against the rules written so far (read in this
        transaction) and write the accepted ones: a policy version as an ``xp_rules`` row, a
        calendar as its version's ``xp_seasons`` rows (append-only)."""
        policies = await load(conn)
        calendar_before = policies.calendar
        versions: list[tuple[PolicyVersion, ConsumerRecord[bytes, bytes], dict[str, Any]]] = []
        for record in records:
            value, reason = judge(record, self.lead_seconds, policies)
            if reason is not None:
                log.warning("policies topic offset %d not written: %s", record.offset, reason)
            if value is None or reason is not None:
                continue  # a tombstone, or refused
            apply(value, policies)
            if value["kind"] == "policy":
                versions.append((PolicyVersion.from_record(value), record, value))
        async with conn.cursor() as cur:
            for version, record, value in versions:
                await cur.execute(query("insert_rule"), {
                    "policy_id": version.policy_id, "version": version.version,
                    "effective_day": version.effective_day,
                    "definition": orjson.dumps(value["definition"]).decode(),
                    "sha256": hashlib.sha256(record.value or b"").hexdigest(),
                    "published_at": datetime.fromtimestamp(record.timestamp / 1000, UTC),
                    "topic": record.topic, "partition": record.partition,
                    "offset": record.offset})
            if policies.calendar is not calendar_before:
                calendar = policies.calendar
                await cur.execute(query("insert_seasons"), {
                    "version": calendar.version,
                    "ids": [s.season_id for s in calendar.seasons],
                    "starts": [s.starts_at for s in calendar.seasons],
                    "ends": [s.ends_at for s in calendar.seasons]})


async def load(conn: psycopg.AsyncConnection[Any]) -> Policies:
    """The rules written so far: every policy version of ``xp_rules`` and the calendar of
    ``xp_seasons``."""
    policies = Policies()
    async with conn.cursor() as cur:
        await cur.execute(query("rules"))
        for policy_id, version, effective_day, definition in await cur.fetchall():
            policies.add(PolicyVersion.from_record({
                "kind": "policy", "policy_id": policy_id, "version": version,
                "effective_day": effective_day.isoformat(), "definition": definition}))
        await cur.execute(query("seasons"))
        rows = await cur.fetchall()
    if rows:
        policies.calendar = Calendar(max(r[3] for r in rows),
                                     [Season(r[0], r[1], r[2]) for r in rows])
    return policies

"""The policy feed: the policies topic read to its end, then tailed, into
:class:`streams.policies.Policies` (docs/design.md, "Grants: policies").

A plain aiokafka consumer with no group (one partition, assigned), not a Faust GlobalTable:
every worker process reads the whole topic (the grant stream for policy versions, the XP
stream for the season calendar, one feed each). Claims are decided and XP events folded only
once the feed has reached the end the topic had when the batch was fetched, so a version or
calendar published before a record is applied to it. A record that breaks the schema or a
policy rule, or arrives after its deadline, is refused, counted and logged, and never applied:
every decider refuses the same records, so replay agrees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fastjsonschema
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams import kafka
from streams.events import schema_validator
from streams.metrics import Metrics
from streams.policies import Calendar, Policies, PolicyError, PolicyVersion, publish_deadline
from streams.settings import Settings

log = logging.getLogger(__name__)


def refusal(record: dict[str, object], timestamp: datetime, lead_seconds: float,
            policies: Policies) -> str | None:
    """Why ``record`` (a parsed policies-topic value published at ``timestamp``) may not be
    applied to ``policies``, or None: the schema, a policy rule, the publish deadline, a
    started season changed. Shared by the feed and ``streams policy validate|publish``."""
    try:
        schema_validator("xp_policy.v1.json")(record)
    except fastjsonschema.JsonSchemaValueException as exc:
        return f"schema: {exc.message}"
    try:
        if record["kind"] == "policy":
            version = PolicyVersion.from_record(record)
            deadline = publish_deadline(version.effective_day, lead_seconds)
            if timestamp > deadline:
                return (f"policy_too_late: {version.policy_id} v{version.version} takes effect "
                        f"{version.effective_day}; it had to be published by "
                        f"{deadline.isoformat()}")
            Policies({k: list(v) for k, v in policies.versions.items()}).add(version)
        else:
            calendar = Calendar.from_record(record)
            current = policies.calendar
            if calendar.version < current.version or (calendar.version == current.version
                                                      and calendar != current):
                return (f"calendar_version: season calendar v{calendar.version} is not newer "
                        f"than v{current.version}")
            deadline = timestamp + timedelta(seconds=lead_seconds)
            changed = policies.calendar.changes_before(calendar, deadline)
            if changed:
                return (f"season_too_late: seasons {changed} start before {deadline.isoformat()}"
                        f" (the publish lead of {lead_seconds:.0f} s from now); a season is "
                        f"added or changed at least that long before it starts, never after")
    except PolicyError as exc:
        return f"policy: {exc}"
    return None


def judge(record: ConsumerRecord[bytes, bytes], lead_seconds: float,
          policies: Policies) -> tuple[dict[str, Any] | None, str | None]:
    """(parsed value, None) when the policies-topic ``record`` may be applied to ``policies``
    now, else (value or None, why not); (None, None) for a tombstone (nothing to apply:
    versions are immutable). Shared by every reader of the topic, so all refuse alike."""
    if record.value is None:
        return None, None
    at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None, "bad_json"
    if not isinstance(value, dict):
        return None, "schema: not an object"
    return value, refusal(value, at, lead_seconds, policies)


def apply(record: dict[str, object], policies: Policies) -> None:
    """Apply a record :func:`refusal` accepted."""
    if record["kind"] == "policy":
        policies.add(PolicyVersion.from_record(record))
    else:
        policies.calendar = Calendar.from_record(record)


class PolicyFeed:
    """The policies topic as a stream of the worker reads it.

    Args:
        settings: the policies topic, the publish lead, the brokers.
        metrics: ``xp_grant_policy_records_total``, ``xp_grant_policy_lag_records``,
            ``xp_grant_policy_paused``; None for
            a second feed of the same worker (the XP stream's: the grant stream's feed exports
            and logs what both read, once).
    """

    def __init__(self, settings: Settings, metrics: Metrics | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policies = Policies()
        self._tp = TopicPartition(settings.policies_topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._next = 0

    async def catch_up(self, timeout_s: float = 30.0,
                       connect_timeout_s: float | None = None) -> None:
        """Read every record up to the topic's high watermark as the last fetch response gave
        it (aiokafka keeps fetching in the background, so that is current; started on first
        use, when it waits for a first response). Cheap when nothing is new: no request.

        Args:
            timeout_s: seconds to read the topic to its end, the wait for a broker included.
            connect_timeout_s: seconds to wait for a broker to start the consumer on (default
                ``timeout_s``; 0: one attempt, as a command line wants).

        Raises:
            TimeoutError: the topic could not be read to its end within ``timeout_s``
                seconds, a broker to start the consumer on included (the reader then exits
                and the batch is read again).
        """
        deadline = time.monotonic() + timeout_s
        if self._consumer is None:
            self._consumer = await self._start(
                deadline if connect_timeout_s is None else
                min(deadline, time.monotonic() + connect_timeout_s))
        while True:
            batch = await self._consumer.getmany(self._tp, timeout_ms=0)
            for record in batch.get(self._tp, []):
                self._read(record)
                self._next = record.offset + 1
            end = self._consumer.highwater(self._tp)
            if end is not None and self._next >= end:
                break
            if end is not None and not batch:  # compacted away or a marker: skip to position
                self._next = max(self._next, await self._consumer.position(self._tp))
                if self._next >= end:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the policies topic {self._tp.topic} was not read to its "
                                   f"end within {timeout_s:.0f} s")
            if self.metrics is not None:  # claims wait for the tail (docs/design.md, Grants)
                self.metrics.grant_policy_paused.set(1)
                if end is not None:
                    self.metrics.grant_policy_lag.set(max(0, end - self._next))
            await asyncio.sleep(0.05)
        if self.metrics is not None:
            self.metrics.grant_policy_paused.set(0)
            self.metrics.grant_policy_lag.set(max(0, end - self._next))

    async def _start(self, deadline: float) -> AIOKafkaConsumer:
        """The feed's consumer, started and at the topic's start. A broker that does not
        answer (restarting) is tried again every 0.5 s until ``deadline`` (monotonic seconds):
        the first batch after a worker's start must not end it for that.

        Raises:
            TimeoutError: no broker answered before ``deadline``.
        """
        started = time.monotonic()
        said = 0.0
        while True:
            consumer = kafka.consumer(self.settings, None, fetch_max_wait_ms=100)
            try:
                await consumer.start()
            except KafkaConnectionError as exc:
                await consumer.stop()
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the policies topic {self._tp.topic} could not be "
                                       f"read: {exc}") from exc
                waited = time.monotonic() - started
                if not said or waited - said >= 10:  # once, then every 10 s
                    log.warning("policies topic: no broker answered for %.0f s (%s); trying "
                                "again", waited, exc)
                    said = waited or 1e-9
                await asyncio.sleep(0.5)
                continue
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            return consumer

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> None:
        value, reason = judge(record, self.settings.policy_min_lead_seconds, self.policies)
        if value is None and reason is None:
            return  # a tombstone
        if reason is None:
            assert value is not None
            apply(value, self.policies)
            if self.metrics is not None:
                self.metrics.grant_policy_records.labels("applied").inc()
            return
        if self.metrics is not None:
            self.metrics.grant_policy_records.labels(reason.split(":", 1)[0]).inc()
            log.error("policies topic offset %d refused: %s", record.offset, reason)

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

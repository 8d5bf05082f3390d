"""The game-server publisher: an async API over aiokafka, and ``streams publish`` for JSON lines.

Records are keyed by ``student_id`` (``profile_id`` for action events) so that one student's
events stay in one partition, in order (docs/design.md, guarantee 7). The producer batches
(``linger_ms``) and waits for acks from all in-sync replicas.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from streams import kafka
from streams.errors import PublishError
from streams.settings import Settings

KEY_FIELDS = {"xp": "student_id", "action": "profile_id", "claim": "student_id"}
"""Which field of each event type is the record key."""


class Publisher:
    """Publishes events to one topic. Use as ``async with Publisher(settings) as pub``."""

    def __init__(self, settings: Settings, topic: str | None = None, kind: str = "xp") -> None:
        self.settings = settings
        self.topic = topic or (settings.claims_topic if kind == "claim" else settings.xp_topic)
        self.key_field = KEY_FIELDS[kind]
        self._producer = kafka.producer(settings)

    async def __aenter__(self) -> Publisher:
        """Connect to the brokers. Raises :class:`PublishError` when none answers or none
        accepts the credentials, with the broker's reason (e.g. ``Authentication failed``,
        ``certificate verify failed``)."""
        with kafka.connect_failures() as reasons:
            try:
                await self._producer.start()
            except KafkaError as exc:
                await self._producer.stop()
                raise PublishError(
                    f"cannot reach the brokers {self.settings.kafka_bootstrap_servers}: "
                    f"{reasons[-1] if reasons else exc}"
                ) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send_raw(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        """Queue one record; return a future that resolves when the broker acknowledges it."""
        try:
            future: asyncio.Future[Any] = await self._producer.send(self.topic, key=key,
                                                                    value=value)
            return future
        except KafkaError as exc:
            raise PublishError(f"could not queue a record for {self.topic}: {exc}") from exc

    async def publish(self, event: Mapping[str, Any]) -> None:
        """Publish one event and wait for the acknowledgement.

        Raises:
            PublishError: missing key field, or the broker did not acknowledge.
        """
        await self.publish_many([event])

    async def claim(self, student_id: str, client_tz: str, *, claim_id: str | None = None,
                    segment: str | None = None, client_time: str | None = None,
                    source: str | None = None) -> str:
        """Publish a daily-login claim for ``student_id`` (the topic of a ``kind="claim"``
        publisher) and wait for the acknowledgement; return its claim id (a new UUID unless
        given: resend a claim with its id, the grant stream answers it once). The outcome comes
        on the outcomes topic (docs/design.md, "Grants").

        Raises:
            PublishError: the claim breaks its schema (e.g. an unknown zone) or was not
                acknowledged.
        """
        claim = {"type": "daily_login_claim", "id": claim_id or str(uuid.uuid4()),
                 "student_id": student_id, "client_tz": client_tz, "segment": segment,
                 "client_time": client_time, "source": source}
        return await self._send_claim({k: v for k, v in claim.items() if v is not None})

    async def change_reward_tz(self, student_id: str, reward_tz: str,
                               requested_by: str = "learner") -> str:
        """Publish a change of ``student_id``'s reward zone (effective at the end of their
        current reward day, rate-limited); return its id. Raises :class:`PublishError`."""
        return await self._send_claim({"type": "reward_tz_change", "id": str(uuid.uuid4()),
                                       "student_id": student_id, "reward_tz": reward_tz,
                                       "requested_by": requested_by})

    async def _send_claim(self, value: dict[str, Any]) -> str:
        from streams.errors import InvalidEvent
        from streams.grant.decide import decode_claim

        raw = orjson.dumps(value)
        try:
            decode_claim(value["student_id"].encode(), raw, self.settings.limits(), 0, 0, 0)
        except InvalidEvent as exc:
            raise PublishError(f"not a valid claim ({exc.reason}): {exc.detail}") from None
        await wait_acks([await self.send_raw(value["student_id"].encode(), raw)], self.topic)
        return str(value["id"])

    async def send_records(
        self, records: Iterable[tuple[bytes | None, bytes]],
        progress: Callable[[int], None] | None = None, window: int = 20_000,
    ) -> int:
        """Send (key, value) records in order, waiting for acks every ``window`` records so
        memory stays bounded; ``progress(n)`` is called after each window and at the end.

        Returns:
            The number of records acknowledged.

        Raises:
            PublishError: a record was not acknowledged.
        """
        count = 0
        futures = []
        for key, value in records:
            futures.append(await self.send_raw(key, value))
            if len(futures) >= window:
                count += await wait_acks(futures, self.topic)
                futures = []
                if progress is not None:
                    progress(count)
        count += await wait_acks(futures, self.topic)
        if progress is not None:
            progress(count)
        return count

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Publish events in batches and wait until every one is acknowledged.

        Returns:
            The number of records acknowledged.

        Raises:
            PublishError: an event lacks its key field, or a record was not acknowledged
                (the others may have been: resend all, the pipeline drops duplicates by id).
        """
        def records() -> Iterator[tuple[bytes | None, bytes]]:
            for event in events:
                key = event.get(self.key_field)
                if not isinstance(key, str):
                    raise PublishError(f"event {event.get('id')!r} has no {self.key_field}")
                yield key.encode(), orjson.dumps(event)

        return await self.send_records(records())


async def wait_acks(futures: list[asyncio.Future[Any]], topic: str) -> int:
    """Wait for every send future; raise :class:`PublishError` if any failed."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise PublishError(
            f"{len(failed)} of {len(futures)} records to {topic} not acknowledged: {failed[0]}"
        )
    return len(results)


async def publish_lines(
    settings: Settings, lines: Iterable[bytes], topic: str | None = None
) -> int:
    """Publish JSON lines, one record a line: an event object, or an array of one student's
    events (a batched record, ``xp_event_batch.v1.json``, keyed by its first event's key
    field); blank lines are skipped. The pipeline validates; this only needs the key.

    Raises:
        PublishError: a line is not an event object (or an array of them) with a key field,
            or was not acknowledged.
    """
    async with Publisher(settings, topic) as pub:

        def records() -> Iterator[tuple[bytes | None, bytes]]:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise PublishError(f"line {number}: not JSON: {exc}") from None
                first = doc[0] if isinstance(doc, list) and doc else doc
                if not isinstance(first, dict) or not isinstance(first.get(pub.key_field), str):
                    raise PublishError(f"line {number}: not an event object (or an array of "
                                       f"them) with {pub.key_field}")
                yield first[pub.key_field].encode(), line.strip()

        return await pub.send_records(records())

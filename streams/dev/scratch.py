"""Throwaway topics and schema on the configured broker and database, for runs that must leave
both as they found them (``streams lab bench``, ``streams lab chaos``).

A run gets its own schema ``xp_<kind>_<run>`` (the migrations applied in it; the pipeline
reaches it through ``search_path`` in its database URL) and its own topics and consumer groups
``<kind>-<run>-*``; :meth:`Scratch.cleanup` drops the schema and deletes the topics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from streams import kafka, topics
from streams.db.connect import connect
from streams.db.migrate import migrate
from streams.settings import Settings


class Scratch:
    """Own schema and topics of one run of kind ``kind`` (``bench``, ``chaos``).

    Args:
        settings: where (broker, database) and how many partitions.
        kind: names the schema and topics.
        workdir: the Faust table stores live under it (``worker-<name>``).
    """

    def __init__(self, settings: Settings, kind: str, workdir: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.schema = f"xp_{kind}_{run}"
        self.prefix = f"{kind}-{run}"
        sep = "&" if "?" in settings.database_url else "?"
        self.base = settings.with_(
            database_url=f"{settings.database_url}{sep}options=-csearch_path%3D{self.schema}",
            xp_topic=f"{self.prefix}-xp", worker_group=f"{self.prefix}-worker",
            ledger_group=f"{self.prefix}-ledger", totals_group=f"{self.prefix}-totals",
            action_topic=f"{self.prefix}-actions",
            action_ledger_group=f"{self.prefix}-action-ledger",
            progress_group=f"{self.prefix}-progress", data_dir=str(workdir / "worker"),
            **self._grant_names(self.prefix),
        )
        """Settings of the run: its schema, topics and groups."""
        self.admin_url = settings.database_url
        self.workdir = workdir
        self.topics: list[str] = []

    def variant(self, name: str) -> Settings:
        """Settings of a fresh topic and groups (``<kind>-<run>-<name>``), topics created."""
        s = self.base.with_(xp_topic=f"{self.prefix}-{name}",
                            worker_group=f"{self.prefix}-{name}-worker",
                            ledger_group=f"{self.prefix}-{name}-ledger",
                            totals_group=f"{self.prefix}-{name}-totals",
                            action_topic=f"{self.prefix}-{name}-actions",
                            data_dir=str(self.workdir / f"worker-{name}"),
                            **self._grant_names(f"{self.prefix}-{name}"))
        self.add_topics(s)
        return s

    @staticmethod
    def _grant_names(prefix: str) -> dict[str, str]:
        """The grant stream's topics and groups of a run: never the broker's real ones."""
        return {"claims_topic": f"{prefix}-claims", "policies_topic": f"{prefix}-policies",
                "outcomes_topic": f"{prefix}-outcomes", "award_group": f"{prefix}-award",
                "grant_group": f"{prefix}-grant", "rules_group": f"{prefix}-rules"}

    def add_topics(self, s: Settings) -> None:
        """Create the pipeline's topics of ``s`` and remember them for :meth:`cleanup`."""
        self.topics += [s.xp_topic, s.dlq_topic, s.action_topic, s.action_dlq_topic,
                        s.claims_topic, s.claims_dlq_topic, s.outcomes_topic, s.policies_topic,
                        *(topics.changelog_topic(s.worker_group, t)
                          for t in topics.WORKER_TABLES)]
        asyncio.run(kafka.pipeline_topics(s))

    def setup(self) -> None:
        """Create the schema and apply the migrations in it."""
        with connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        migrate(self.base.database_url)

    def cleanup(self, say: Callable[[str], None] = print) -> None:
        """Drop the schema and delete the topics (best effort; a failure is said, not raised:
        the run's figures are still good)."""
        with connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

        async def delete() -> None:
            admin = AIOKafkaAdminClient(**kafka.client_kwargs(self.base))
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                doomed = [t for t in self.topics if t in existing]
                if doomed:
                    await admin.delete_topics(doomed)
            finally:
                await admin.close()

        if not self.topics:
            return
        try:
            asyncio.run(delete())
        except Exception as exc:  # noqa: BLE001 - report, the run's figures are still good
            say(f"could not delete the {self.prefix} topics ({exc})")

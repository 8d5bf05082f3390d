"""Topic and consumer-group names: the one place they are spelled.

Names can be overridden through settings (:class:`streams.settings.Settings`); these are the
defaults and the rules that derive the DLQ and changelog names.
"""

from __future__ import annotations

XP_EVENTS = "xp-events"
"""Input topic of XP events, key = student_id."""

ACTION_EVENTS = "action-events"
"""Input topic of action events, key = profile_id."""

CLAIMS = "xp-claims"
"""Input topic of daily-login claims and reward-zone changes, key = student_id."""

POLICIES = "xp-policies"
"""Grant policy versions and the season calendar: one partition, compacted, key
``{policy_id}:{version}``."""

CLAIM_OUTCOMES = "xp-claim-outcomes"
"""One outcome per claim (the grant stream's answer), key = student_id."""

SINK_DLQ = "xp-sinks.dlq"
"""Records whose rows PostgreSQL refused, from every sink (headers name the sink, the source
position and PostgreSQL's message)."""

WORKER_GROUP = "xp-streams-worker"
"""Consumer group of the dedupe/fold worker: its positions in the source topics are committed
there (for lag monitoring), and its table changelogs are named after it."""

LEDGER_GROUP = "xp-ledger-sink"
"""Consumer group of the ledger sink."""

TOTALS_WRITER_GROUP = "xp-totals-writer"
"""Consumer group of the totals writer (reads the totals changelog)."""

ACTION_LEDGER_GROUP = "xp-action-ledger-sink"
"""Consumer group of the action ledger sink (action events -> ``action_events``)."""

PROGRESS_WRITER_GROUP = "xp-progress-writer"
"""Consumer group of the progress writer (reads the vector progress changelog)."""

AWARD_SINK_GROUP = "xp-award-sink"
"""Consumer group of the award sink (outcomes -> ``xp_claim_outcomes``, ``xp_awards``)."""

GRANT_WRITER_GROUP = "xp-grant-writer"
"""Consumer group of the grant writer (reads the grant state changelog)."""

RULES_SINK_GROUP = "xp-rules-sink"
"""Consumer group of the rules sink (policies topic -> ``xp_rules``, ``xp_seasons``)."""

PROGRESS_TABLE = "vector_progress"
"""Faust table name of the per-(profile, vector, version) progress."""

ACTION_DEDUPE_TABLE = "action_dedupe"
"""Faust table name of the action events' dedupe state (event id -> first sighting)."""

TOTALS_TABLE = "xp_totals"
"""Faust table name of the per-student totals."""

DEDUPE_TABLE = "xp_dedupe"
"""Faust table name of the dedupe state (event id -> first sighting)."""

GRANT_TABLE = "xp_grant_state"
"""Faust table name of the per-student grant state (reward zone, streak, last award)."""

CLAIM_DEDUPE_TABLE = "claim_dedupe"
"""Faust table name of the claims' dedupe state (claim id -> first sighting), kept for the
dedupe horizon."""

POSITIONS_TABLE = "xp_positions"
"""Faust table name of the worker's positions: source topic and partition -> next offset to
read (docs/design.md, "Fold worker: checkpoints")."""

WORKER_TABLES = (TOTALS_TABLE, DEDUPE_TABLE, PROGRESS_TABLE, ACTION_DEDUPE_TABLE, GRANT_TABLE,
                 CLAIM_DEDUPE_TABLE, POSITIONS_TABLE)
"""Every table of the worker (one changelog topic each)."""


def position_key(topic: str, partition: int) -> bytes:
    """The positions table's key of a source partition (one store for every partition in the
    memory store, so the partition is part of the key)."""
    return f"{topic}/{partition}".encode()


def encode_position(offset: int) -> bytes:
    """A position (the next offset to read) as changelog bytes."""
    return str(offset).encode()


def decode_position(raw: bytes) -> int:
    """Inverse of :func:`encode_position`. Raises ``ValueError``."""
    return int(raw)


def tables_group(worker_group: str) -> str:
    """Faust's consumer group (= Faust app id) of the worker: it assigns the tables' partitions
    among the worker processes and recovers them. The source topics are read outside it, so
    their committed offsets can live in ``worker_group`` itself."""
    return f"{worker_group}-tables"


def dlq_topic(topic: str) -> str:
    """Return the DLQ topic of an input topic: one DLQ per input topic (``xp-events.dlq``)."""
    return f"{topic}.dlq"


def changelog_topic(app_id: str, table: str) -> str:
    """Return the changelog topic Faust keeps for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"


def transactional_id(worker_group: str, partition: int) -> str:
    """The transactional id of the worker's checkpoints of ``partition`` (docs/design.md, "Fold
    worker: checkpoints"): one per partition number, whichever worker holds it, so its new
    owner fences every earlier one."""
    return f"{worker_group}-{partition}"

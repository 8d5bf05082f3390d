"""Topic and consumer-group names: the one place they are spelled (STYLE.md).

Names can be overridden through settings (:class:`streams.settings.Settings`); these are the
defaults and the rules that derive the DLQ and changelog names.
"""

from __future__ import annotations

XP_EVENTS = "xp-events"
"""Input topic of XP events, key = student_id."""

ACTION_EVENTS = "action-events"
"""Input topic of action events, key = profile_id."""

WORKER_GROUP = "xp-streams-worker"
"""Consumer group (= Faust app id) of the dedupe/fold worker."""

LEDGER_GROUP = "xp-ledger-sink"
"""Consumer group of the ledger sink."""

TOTALS_WRITER_GROUP = "xp-totals-writer"
"""Consumer group of the totals writer (reads the totals changelog)."""

ACTION_LEDGER_GROUP = "xp-action-ledger-sink"
"""Consumer group of the action ledger sink (action events -> ``action_events``)."""

PROGRESS_WRITER_GROUP = "xp-progress-writer"
"""Consumer group of the progress writer (reads the vector progress changelog)."""

PROGRESS_TABLE = "vector_progress"
"""Faust table name of the per-(profile, vector, version) progress."""

ACTION_DEDUPE_TABLE = "action_dedupe"
"""Faust table name of the action events' dedupe state (event id -> first sighting)."""

TOTALS_TABLE = "xp_totals"
"""Faust table name of the per-student totals."""

DEDUPE_TABLE = "xp_dedupe"
"""Faust table name of the dedupe state (event id -> first sighting)."""


def dlq_topic(topic: str) -> str:
    """Return the DLQ topic of an input topic: one DLQ per input topic (``xp-events.dlq``)."""
    return f"{topic}.dlq"


def changelog_topic(app_id: str, table: str) -> str:
    """Return the changelog topic Faust keeps for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"

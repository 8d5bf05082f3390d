"""XP Streams: the event pipeline behind learning-game XP topics.

Data flow (docs/design.md, Data flow): game servers publish to ``xp-events`` (key = student_id); the
Faust worker (:mod:`streams.totals`) validates, dedupes by event id and folds deltas into the
``xp_totals`` table; the totals writer copies that table's changelog into PostgreSQL; the ledger
sink (:mod:`streams.ledger`) writes every accepted event once to ``xp_events``.
"""

__version__ = "0.1.0"

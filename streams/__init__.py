"""XP Streams: the event pipeline behind learning-game XP topics.

Data flow (docs/design.md, Data flow): game servers publish to ``xp-events`` (key = student_id); the
fold worker (:mod:`streams.worker`) validates, dedupes by event id and folds deltas into the
``xp_totals`` table (:mod:`streams.xp`; action events into vector progress, :mod:`streams.actions`);
the totals writer copies that table's changelog into PostgreSQL; the ledger sink writes every
accepted event once to ``xp_events``. One package per stream; the harness (bench, chaos, demo,
loadgen) lives in :mod:`streams.lab`, the local stack in :mod:`streams.dev`.
"""

__version__ = "0.1.0"

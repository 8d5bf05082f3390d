"""The ``xp-events`` stream (docs/design.md, Data flow): XP awards deduplicated by event id and
folded into per-student totals.

- :mod:`.fold`: the pure fold of one XP event into a student's totals;
- :mod:`.stream`: the stream the worker's batch reader runs (dedupe, fold, changelog);
- :mod:`.ledger`: the ledger sink's writer (append-only ``xp_events`` rows);
- :mod:`.totals`: the totals writer (the totals changelog into ``student_totals``).
"""

"""The ``action-events`` stream (docs/design.md, Data flow): learner actions deduplicated by
event id and folded into vector progress; the same shape as :mod:`streams.xp`.

- :mod:`.fold`: the pure fold of one action event into a student's vector progress;
- :mod:`.stream`: the stream the worker's batch reader runs;
- :mod:`.ledger`: the action ledger sink's writer (append-only ``action_events`` rows);
- :mod:`.progress`: the progress writer (the progress changelog into ``vector_progress``).
"""

"""Totals stage: dedupe by event id and fold deltas into per-student totals
(docs/design.md, Data flow).

``dedupe`` and ``fold`` are pure; ``agents`` runs them in a Faust worker; ``writer`` copies the
totals changelog into PostgreSQL.
"""

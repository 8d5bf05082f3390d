"""Ledger stage: the durable, append-only ``xp_events`` ledger in PostgreSQL
(docs/design.md, Data flow)."""

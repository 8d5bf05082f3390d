"""Ledger stage: the durable, append-only ``xp_events`` ledger in PostgreSQL (DESIGN.md 2)."""

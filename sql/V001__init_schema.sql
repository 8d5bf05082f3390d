-- V001: the XP ledger, the per-student totals and the sinks' consumed offsets.
-- Source: seed 001 (xp_events, xp_totals), DESIGN.md section 3 (provenance), STYLE.md (offsets
-- stored in the same transaction as the rows).

-- Append-only ledger of every accepted XP event, exactly once per event id.
CREATE TABLE xp_events (
    id           uuid        PRIMARY KEY,          -- client-generated idempotency key
    student_id   uuid        NOT NULL,
    kind         text        NOT NULL,
    delta        integer     NOT NULL,             -- XP
    word_set_id  uuid,
    homework_id  uuid,
    created_at   timestamptz NOT NULL,
    metadata     jsonb,
    fingerprint  bytea       NOT NULL,             -- content digest: duplicate vs conflict
    topic        text        NOT NULL,             -- provenance for audits
    "partition"  integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
-- A student's history in time order (support, replay audits, reconciliation per student).
CREATE INDEX xp_events_student_created_idx ON xp_events (student_id, created_at);
-- Where a record came from: audits by topic position.
CREATE INDEX xp_events_provenance_idx ON xp_events (topic, "partition", "offset");

-- Per-student totals, folded by the worker and written by the totals writer.
CREATE TABLE xp_totals (
    student_id      uuid        PRIMARY KEY,
    total_xp        bigint      NOT NULL DEFAULT 0,   -- XP
    games_played    integer     NOT NULL DEFAULT 0,
    last_game_type  text,
    last_game_at    timestamptz,                      -- created_at behind last_game_type
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         bigint      NOT NULL DEFAULT 0    -- applied events: upsert guard
);
-- Leaderboards and "recently active" reads.
CREATE INDEX xp_totals_total_xp_idx ON xp_totals (total_xp DESC);
CREATE INDEX xp_totals_updated_at_idx ON xp_totals (updated_at);

-- Offsets consumed by each sink, committed with the rows they produced.
CREATE TABLE consumer_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    "partition"     integer     NOT NULL,
    next_offset     bigint      NOT NULL,             -- the next offset to read
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, "partition")
);

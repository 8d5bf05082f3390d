-- V007: an event's identity is (event id, owner) (docs/design.md, Contracts). One id sent for
-- two students (a client bug) is two events, each in its own student's ledger and totals,
-- so xp_totals.total_xp = SUM(xp_events.delta) holds for both. Before, the ledger kept the
-- first row of the id while both students' partitions folded it: one total was off for ever.
-- The primary keys lead with the id, so a look-up by id alone still uses them.

ALTER TABLE xp_events DROP CONSTRAINT xp_events_pkey,
    ADD CONSTRAINT xp_events_pkey PRIMARY KEY (id, student_id);

ALTER TABLE action_events DROP CONSTRAINT action_events_pkey,
    ADD CONSTRAINT action_events_pkey PRIMARY KEY (id, profile_id);

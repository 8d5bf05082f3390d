-- Rollback of V007: the ledgers are keyed by event id alone again. Fails (and changes
-- nothing) while an id is held by two owners: delete or move one of each pair first
-- (`SELECT id FROM xp_events GROUP BY id HAVING count(*) > 1`).
ALTER TABLE xp_events DROP CONSTRAINT xp_events_pkey,
    ADD CONSTRAINT xp_events_pkey PRIMARY KEY (id);

ALTER TABLE action_events DROP CONSTRAINT action_events_pkey,
    ADD CONSTRAINT action_events_pkey PRIMARY KEY (id);

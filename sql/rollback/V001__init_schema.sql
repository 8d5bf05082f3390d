-- Rollback of V001: drops the ledger, the totals and the sinks' offsets (their data is lost;
-- the ledger can be rebuilt by replaying the topic while its retention lasts).
DROP TABLE IF EXISTS consumer_offsets;
DROP TABLE IF EXISTS xp_totals;
DROP TABLE IF EXISTS xp_events;

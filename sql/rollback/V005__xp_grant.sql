-- Rollback of V005: the grant tables are dropped with their policies (the awards stay in the
-- ledger as ordinary daily_login events).
DROP TABLE IF EXISTS xp_claim_outcomes CASCADE;
DROP TABLE IF EXISTS xp_awards CASCADE;
DROP TABLE IF EXISTS xp_streaks CASCADE;
DROP TABLE IF EXISTS xp_users CASCADE;

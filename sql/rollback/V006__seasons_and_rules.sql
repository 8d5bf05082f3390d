-- Rollback of V006: the views and the rules tables go; the seasonal columns are dropped (the
-- worker's table keeps them, and the totals writer writes them again after V006 returns).
DROP VIEW IF EXISTS xp_balance;
DROP VIEW IF EXISTS xp_ledger;
DROP VIEW IF EXISTS xp_rules_active;
DROP VIEW IF EXISTS xp_seasons_current;
DROP TABLE IF EXISTS xp_seasons CASCADE;
DROP TABLE IF EXISTS xp_rules CASCADE;
ALTER TABLE xp_totals DROP COLUMN IF EXISTS seasonal_xp, DROP COLUMN IF EXISTS season_id;
ALTER TABLE xp_events DROP COLUMN IF EXISTS record_ts;

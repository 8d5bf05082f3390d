-- Rollback of V002: rows of batched records lose their place in the record.
ALTER TABLE xp_events DROP COLUMN IF EXISTS record_index;

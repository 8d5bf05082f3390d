-- Rollback of V004 (seed 003's rollback SQL): the action ledger and vector progress are dropped
-- with their policies and trigger.
DROP TABLE IF EXISTS action_events CASCADE;
DROP TABLE IF EXISTS vector_progress CASCADE;
DROP FUNCTION IF EXISTS set_updated_at();

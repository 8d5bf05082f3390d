-- Rollback of V003: row-level security off, policies, grants and the parent links dropped,
-- PUBLIC's default privileges back. The group roles stay (they are cluster-wide and may be in
-- use by other databases); drop them by hand with DROP ROLE when no database uses them.
DROP POLICY IF EXISTS xp_events_writer ON xp_events;
DROP POLICY IF EXISTS xp_events_all_rows ON xp_events;
DROP POLICY IF EXISTS xp_events_own ON xp_events;
DROP POLICY IF EXISTS xp_events_linked ON xp_events;
DROP POLICY IF EXISTS xp_totals_writer ON xp_totals;
DROP POLICY IF EXISTS xp_totals_all_rows ON xp_totals;
DROP POLICY IF EXISTS xp_totals_own ON xp_totals;
DROP POLICY IF EXISTS xp_totals_linked ON xp_totals;
ALTER TABLE xp_events DISABLE ROW LEVEL SECURITY;
ALTER TABLE xp_totals DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON xp_events, xp_totals, consumer_offsets
    FROM xp_writer, xp_reader, xp_admin, xp_learner, xp_parent;
DROP TABLE IF EXISTS xp_parent_links;
DROP FUNCTION IF EXISTS xp_current_user();

-- V003: database roles and row-level security (issue 5).
-- Source: seed 000 ("authenticated students/parents/admins can SELECT from xp_events, but
-- clients cannot INSERT (service role only)"), seed 003 (RLS by ownership, auth.uid()).
--
-- Group roles (NOLOGIN; grant them to login roles):
--   xp_writer  the sinks: INSERT into the ledger, INSERT/UPDATE of the totals and of the sinks'
--              consumed offsets; nothing else (no DELETE, no TRUNCATE, no DDL)
--   xp_reader  analysts: SELECT on every pipeline table
--   xp_admin   client admins: SELECT on every learner's rows
--   xp_learner a learner: SELECT on their own rows only
--   xp_parent  a parent: SELECT on the rows of the learners linked to them (xp_parent_links)
-- Clients (learner, parent, admin) can never INSERT, UPDATE or DELETE ledger or totals rows.
-- Who the user is: xp_current_user() = Supabase's auth.uid() where it exists, else the session
-- setting xp.user_id, which a trusted service (API, pooler) sets per request.
-- Roles are cluster-wide: created once, kept when a database is dropped.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['xp_writer', 'xp_reader', 'xp_admin', 'xp_learner', 'xp_parent']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

-- Which learners a parent may see.
CREATE TABLE xp_parent_links (
    parent_id   uuid        NOT NULL,
    student_id  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_id, student_id)
);

-- The user of this session: auth.uid() on Supabase, else the setting xp.user_id (NULL: none).
CREATE FUNCTION xp_current_user() RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    uid uuid;
BEGIN
    IF to_regprocedure('auth.uid()') IS NOT NULL THEN
        EXECUTE 'SELECT auth.uid()' INTO uid;
        RETURN uid;
    END IF;
    RETURN nullif(current_setting('xp.user_id', true), '')::uuid;
END $$;

REVOKE ALL ON xp_events, xp_totals, consumer_offsets, xp_parent_links FROM PUBLIC;
GRANT EXECUTE ON FUNCTION xp_current_user() TO xp_learner, xp_parent, xp_admin, xp_reader;

GRANT SELECT, INSERT ON xp_events TO xp_writer;
GRANT SELECT, INSERT, UPDATE ON xp_totals, consumer_offsets TO xp_writer;
GRANT SELECT ON xp_events, xp_totals, consumer_offsets, xp_parent_links TO xp_reader;
GRANT SELECT ON xp_events, xp_totals TO xp_admin, xp_learner, xp_parent;
GRANT SELECT ON xp_parent_links TO xp_admin, xp_parent;

ALTER TABLE xp_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE xp_totals ENABLE ROW LEVEL SECURITY;
ALTER TABLE xp_parent_links ENABLE ROW LEVEL SECURITY;

CREATE POLICY xp_events_writer ON xp_events FOR ALL TO xp_writer USING (true) WITH CHECK (true);
CREATE POLICY xp_events_all_rows ON xp_events FOR SELECT TO xp_reader, xp_admin USING (true);
CREATE POLICY xp_events_own ON xp_events FOR SELECT TO xp_learner
    USING (student_id = xp_current_user());
CREATE POLICY xp_events_linked ON xp_events FOR SELECT TO xp_parent
    USING (student_id IN (SELECT l.student_id FROM xp_parent_links l
                          WHERE l.parent_id = xp_current_user()));

CREATE POLICY xp_totals_writer ON xp_totals FOR ALL TO xp_writer USING (true) WITH CHECK (true);
CREATE POLICY xp_totals_all_rows ON xp_totals FOR SELECT TO xp_reader, xp_admin USING (true);
CREATE POLICY xp_totals_own ON xp_totals FOR SELECT TO xp_learner
    USING (student_id = xp_current_user());
CREATE POLICY xp_totals_linked ON xp_totals FOR SELECT TO xp_parent
    USING (student_id IN (SELECT l.student_id FROM xp_parent_links l
                          WHERE l.parent_id = xp_current_user()));

CREATE POLICY xp_parent_links_all_rows ON xp_parent_links FOR SELECT TO xp_reader, xp_admin
    USING (true);
CREATE POLICY xp_parent_links_own ON xp_parent_links FOR SELECT TO xp_parent
    USING (parent_id = xp_current_user());

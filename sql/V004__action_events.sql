-- V004: action events and vector progress (issue 5).
-- Source: seed 003 (columns, indexes, updated_at trigger, RLS by ownership), DESIGN.md section 3
-- (action event v1, provenance). Differences from the seed: action_events.id is the client's
-- event id (the idempotency key, as in xp_events) rather than a generated one; provenance
-- columns; vector_progress.applied guards the progress writer's upsert. There is no
-- game_profiles table here: profile_id is the learner's id (RLS compares it with
-- xp_current_user(), parents see linked learners through xp_parent_links).

CREATE TABLE action_events (
    id            uuid        PRIMARY KEY,          -- client-generated idempotency key
    action_id     text        NOT NULL,
    profile_id    uuid        NOT NULL,
    source        text,
    vector        text,
    qol_domain    text,
    selected_at   timestamptz,
    completed_at  timestamptz,
    duration      integer,                          -- seconds
    mode          text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    fingerprint   bytea       NOT NULL,             -- content digest: duplicate vs conflict
    topic         text        NOT NULL,             -- provenance for audits
    "partition"   integer     NOT NULL,
    "offset"      bigint      NOT NULL
);
CREATE INDEX idx_action_events_profile_vector ON action_events (profile_id, vector);
CREATE INDEX idx_action_events_completed_at ON action_events (completed_at DESC);

CREATE TABLE vector_progress (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id        uuid        NOT NULL,
    vector            text        NOT NULL,
    step_index        integer     NOT NULL DEFAULT 0,
    version           text        NOT NULL DEFAULT 'v1',
    draft_skipped_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    applied           bigint      NOT NULL DEFAULT 0  -- events folded: upsert guard
);
CREATE UNIQUE INDEX idx_vector_progress_profile_vector_version
    ON vector_progress (profile_id, vector, version);
CREATE INDEX idx_vector_progress_profile ON vector_progress (profile_id);

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END $$;
CREATE TRIGGER trg_vector_progress_updated_at BEFORE UPDATE ON vector_progress
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

REVOKE ALL ON action_events, vector_progress FROM PUBLIC;
GRANT SELECT, INSERT ON action_events TO xp_writer;
GRANT SELECT, INSERT, UPDATE ON vector_progress TO xp_writer;
GRANT SELECT ON action_events, vector_progress TO xp_reader, xp_admin, xp_learner, xp_parent;

ALTER TABLE action_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE vector_progress ENABLE ROW LEVEL SECURITY;

CREATE POLICY action_events_writer ON action_events FOR ALL TO xp_writer
    USING (true) WITH CHECK (true);
CREATE POLICY action_events_all_rows ON action_events FOR SELECT TO xp_reader, xp_admin
    USING (true);
CREATE POLICY action_events_own ON action_events FOR SELECT TO xp_learner
    USING (profile_id = xp_current_user());
CREATE POLICY action_events_linked ON action_events FOR SELECT TO xp_parent
    USING (profile_id IN (SELECT l.student_id FROM xp_parent_links l
                          WHERE l.parent_id = xp_current_user()));

CREATE POLICY vector_progress_writer ON vector_progress FOR ALL TO xp_writer
    USING (true) WITH CHECK (true);
CREATE POLICY vector_progress_all_rows ON vector_progress FOR SELECT TO xp_reader, xp_admin
    USING (true);
CREATE POLICY vector_progress_own ON vector_progress FOR SELECT TO xp_learner
    USING (profile_id = xp_current_user());
CREATE POLICY vector_progress_linked ON vector_progress FOR SELECT TO xp_parent
    USING (profile_id IN (SELECT l.student_id FROM xp_parent_links l
                          WHERE l.parent_id = xp_current_user()));

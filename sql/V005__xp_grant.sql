-- V005: grants (docs/design.md, "Grants"): daily-login awards, claim outcomes, streaks and the
-- learners' reward zones. Names follow the grant plan: user_id is the student's UUID, an
-- award's id is its receipt (= the xp_events id of the award event), one award per learner
-- and reward day. Written by the award sink (outcomes topic) and the grant writer (the grant
-- state changelog), rows and offsets in one transaction like every sink.

CREATE TABLE xp_claim_outcomes (
    outcome_id     uuid        PRIMARY KEY,      -- uuid5(NS_GRANT, 'outcome/' || claim_id)
    claim_id       uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    type           text        NOT NULL,         -- daily_login_claim | reward_tz_change
    outcome        text        NOT NULL,         -- awarded | already_claimed | rejected | accepted
    reason         text,
    decided_at     timestamptz NOT NULL,
    receipt_id     uuid,
    reward_day_id  date,
    body           jsonb       NOT NULL,         -- the whole outcome record
    topic          text        NOT NULL,         -- provenance for audits
    "partition"    integer     NOT NULL,
    "offset"       bigint      NOT NULL
);
CREATE INDEX idx_xp_claim_outcomes_user ON xp_claim_outcomes (user_id, decided_at);

CREATE TABLE xp_awards (
    award_id        uuid        PRIMARY KEY,     -- the receipt = xp_events.id of the award
    user_id         uuid        NOT NULL,
    reward_day_id   date        NOT NULL,
    reward_tz       text        NOT NULL,
    xp_awarded      integer     NOT NULL CHECK (xp_awarded > 0),
    streak_day      integer     NOT NULL CHECK (streak_day >= 1),
    grace_consumed  integer     NOT NULL DEFAULT 0 CHECK (grace_consumed >= 0),
    policy_id       text        NOT NULL,
    policy_version  integer     NOT NULL,
    season_id       text,
    claim_id        uuid        NOT NULL,
    claimed_at      timestamptz NOT NULL,        -- the decision time
    tzdata          text        NOT NULL,        -- IANA version the reward day came from
    UNIQUE (user_id, reward_day_id)
);

CREATE TABLE xp_streaks (
    user_id             uuid        PRIMARY KEY,
    current_streak      integer     NOT NULL DEFAULT 0 CHECK (current_streak >= 0),
    longest_streak      integer     NOT NULL DEFAULT 0 CHECK (longest_streak >= 0),
    last_reward_day_id  date,
    grace_used          integer     NOT NULL DEFAULT 0 CHECK (grace_used >= 0),
    grace_tokens        integer     NOT NULL DEFAULT 0 CHECK (grace_tokens >= 0),
    model_state         jsonb       NOT NULL,    -- the whole grant state
    version             bigint      NOT NULL DEFAULT 0,  -- decisions applied: upsert guard
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (longest_streak >= current_streak)
);

CREATE TABLE xp_users (
    user_id       uuid        PRIMARY KEY,
    reward_tz     text,
    segment       text,
    pending_tz    text,
    pending_from  timestamptz,
    version       bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON xp_claim_outcomes, xp_awards, xp_streaks, xp_users FROM PUBLIC;
GRANT SELECT, INSERT ON xp_claim_outcomes, xp_awards TO xp_writer;
GRANT SELECT, INSERT, UPDATE ON xp_streaks, xp_users TO xp_writer;
GRANT SELECT ON xp_claim_outcomes, xp_awards, xp_streaks, xp_users
    TO xp_reader, xp_admin, xp_learner, xp_parent;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['xp_claim_outcomes', 'xp_awards', 'xp_streaks', 'xp_users']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO xp_writer USING (true) '
                       'WITH CHECK (true)', t || '_writer', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO xp_reader, xp_admin USING (true)',
                       t || '_all_rows', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO xp_learner '
                       'USING (user_id = xp_current_user())', t || '_own', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO xp_parent '
                       'USING (user_id IN (SELECT l.student_id FROM xp_parent_links l '
                       'WHERE l.parent_id = xp_current_user()))', t || '_linked', t);
    END LOOP;
END $$;

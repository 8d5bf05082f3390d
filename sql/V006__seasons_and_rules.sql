-- V006: seasons and the published rules (docs/design.md, "Grants: seasons"). The rules sink
-- writes every policy version and season calendar the deciders accepted from the policies
-- topic; the totals writer writes each learner's seasonal XP; the ledger keeps each record's
-- timestamp, so the season of a ledger row (the season holding min(created_at, record
-- timestamp)) is the one the worker folded it into.

ALTER TABLE xp_events ADD COLUMN record_ts timestamptz;   -- the Kafka record's timestamp

ALTER TABLE xp_totals
    ADD COLUMN seasonal_xp bigint NOT NULL DEFAULT 0,     -- XP of the events of season_id
    ADD COLUMN season_id   text;                          -- newest season an event fell in

CREATE TABLE xp_rules (
    policy_id      text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    effective_day  date        NOT NULL,                  -- first reward day it applies to
    definition     jsonb       NOT NULL,                  -- the whole policy record
    sha256         text        NOT NULL,                  -- of the record value as published
    published_at   timestamptz NOT NULL,                  -- the record's timestamp
    topic          text        NOT NULL,                  -- provenance for audits
    "partition"    integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    PRIMARY KEY (policy_id, version),
    UNIQUE (policy_id, effective_day)
);

-- Every accepted season calendar, one row per season (append-only: versions only grow).
CREATE TABLE xp_seasons (
    calendar_version  integer     NOT NULL,
    season_id         text        NOT NULL,
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL,
    PRIMARY KEY (calendar_version, season_id),
    CHECK (ends_at > starts_at)
);

-- The seasons of the newest calendar.
CREATE VIEW xp_seasons_current WITH (security_invoker = true) AS
SELECT season_id, starts_at, ends_at, calendar_version FROM xp_seasons
WHERE calendar_version = (SELECT max(calendar_version) FROM xp_seasons);

-- The active version of each policy today (UTC): the largest effective_day <= today.
CREATE VIEW xp_rules_active WITH (security_invoker = true) AS
SELECT DISTINCT ON (policy_id) policy_id, version, effective_day, definition, published_at
FROM xp_rules WHERE effective_day <= (now() AT TIME ZONE 'UTC')::date
ORDER BY policy_id, effective_day DESC;

-- The ledger with each row's season.
CREATE VIEW xp_ledger WITH (security_invoker = true) AS
SELECT e.*, s.season_id
FROM xp_events e
LEFT JOIN xp_seasons_current s
  ON s.starts_at <= least(e.created_at, e.record_ts) AND least(e.created_at, e.record_ts) < s.ends_at;

-- Balances: lifetime = current = total_xp (nothing spends XP); seasonal XP counts only while
-- its season is the current one (0 after a rollover with no event yet).
CREATE VIEW xp_balance WITH (security_invoker = true) AS
SELECT t.student_id, t.total_xp AS lifetime_xp, t.total_xp AS current_balance,
       CASE WHEN t.season_id = cur.season_id THEN t.seasonal_xp ELSE 0 END AS seasonal_xp,
       cur.season_id AS current_season_id, t.updated_at
FROM xp_totals t
LEFT JOIN xp_seasons_current cur ON cur.starts_at <= now() AND now() < cur.ends_at;

REVOKE ALL ON xp_rules, xp_seasons, xp_seasons_current, xp_rules_active, xp_ledger, xp_balance
    FROM PUBLIC;
GRANT SELECT, INSERT ON xp_rules, xp_seasons TO xp_writer;
GRANT SELECT ON xp_rules, xp_seasons, xp_seasons_current, xp_rules_active, xp_ledger,
    xp_balance TO xp_writer, xp_reader, xp_admin, xp_learner, xp_parent;

-- The rules are not a learner's data: everyone reads them, only the writer writes them.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['xp_rules', 'xp_seasons']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO xp_writer USING (true) '
                       'WITH CHECK (true)', t || '_writer', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO xp_reader, xp_admin, xp_learner, '
                       'xp_parent USING (true)', t || '_everyone', t);
    END LOOP;
END $$;

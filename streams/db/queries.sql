-- name: stage_ledger
CREATE TEMP TABLE IF NOT EXISTS xp_events_stage
    (LIKE xp_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;

-- name: copy_ledger
COPY xp_events_stage (id, student_id, kind, delta, word_set_id, homework_id, created_at,
                      metadata, fingerprint, topic, "partition", "offset", record_index,
                      record_ts)
FROM STDIN;

-- name: insert_ledger
-- Idempotent by (event id, student): the first record of a pair wins. Returns the rows
-- inserted, and how many of them carry an id that another student's row holds too.
WITH ins AS (
INSERT INTO xp_events (id, student_id, kind, delta, word_set_id, homework_id, created_at,
                       metadata, fingerprint, topic, "partition", "offset", record_index,
                       record_ts)
SELECT id, student_id, kind, delta, word_set_id, homework_id, created_at,
       metadata, fingerprint, topic, "partition", "offset", record_index, record_ts
FROM xp_events_stage
ON CONFLICT (id, student_id) DO NOTHING
RETURNING id, student_id),
-- rows of this batch per id (a window, not a scan of ins per row: that was quadratic)
batch AS (SELECT id, student_id, count(*) OVER (PARTITION BY id) AS same_id FROM ins)
SELECT count(*),
       count(*) FILTER (WHERE same_id > 1
                        OR EXISTS (SELECT 1 FROM xp_events e
                                   WHERE e.id = batch.id AND e.student_id <> batch.student_id))
FROM batch;

-- name: stage_totals
CREATE TEMP TABLE IF NOT EXISTS xp_totals_stage
    (LIKE xp_totals INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;

-- name: copy_totals
COPY xp_totals_stage (student_id, total_xp, games_played, last_game_type, last_game_at,
                      updated_at, version, seasonal_xp, season_id) FROM STDIN;

-- name: upsert_totals
INSERT INTO xp_totals AS t (student_id, total_xp, games_played, last_game_type, last_game_at,
                            updated_at, version, seasonal_xp, season_id)
SELECT student_id, total_xp, games_played, last_game_type, last_game_at, updated_at, version,
       seasonal_xp, season_id
FROM xp_totals_stage
ON CONFLICT (student_id) DO UPDATE
SET total_xp = EXCLUDED.total_xp,
    games_played = EXCLUDED.games_played,
    last_game_type = EXCLUDED.last_game_type,
    last_game_at = EXCLUDED.last_game_at,
    updated_at = EXCLUDED.updated_at,
    version = EXCLUDED.version,
    seasonal_xp = EXCLUDED.seasonal_xp,
    season_id = EXCLUDED.season_id
-- Never backwards (the totals writer). streams rebuild-totals also replaces a row at the same
-- version (a corrupted value) and, with force, one at a higher version (ahead of the ledger).
WHERE (t.version < EXCLUDED.version
       OR (%(replace_equal)s AND t.version = EXCLUDED.version)
       OR %(force)s)
  AND (t.total_xp, t.games_played, t.last_game_type, t.last_game_at, t.version,
       t.seasonal_xp, t.season_id)
      IS DISTINCT FROM (EXCLUDED.total_xp, EXCLUDED.games_played, EXCLUDED.last_game_type,
                        EXCLUDED.last_game_at, EXCLUDED.version, EXCLUDED.seasonal_xp,
                        EXCLUDED.season_id);

-- name: store_offsets
INSERT INTO consumer_offsets (consumer_group, topic, "partition", next_offset)
SELECT %(group)s, %(topic)s, p, o FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS x(p, o)
ON CONFLICT (consumer_group, topic, "partition") DO UPDATE
SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset),
    updated_at = now();

-- name: load_offsets
SELECT "partition", next_offset FROM consumer_offsets
WHERE consumer_group = %(group)s AND topic = %(topic)s;

-- name: mismatched_students
SELECT coalesce(t.student_id, l.student_id) AS student_id,
       t.total_xp AS totals_xp, l.ledger_xp, t.version AS totals_events, l.ledger_events
FROM xp_totals t
FULL OUTER JOIN (SELECT student_id, sum(delta) AS ledger_xp, count(*) AS ledger_events
                 FROM xp_events GROUP BY student_id) l USING (student_id)
WHERE t.total_xp IS DISTINCT FROM l.ledger_xp OR t.version IS DISTINCT FROM l.ledger_events;

-- name: ledger_in_range
SELECT id, student_id, delta, "partition", "offset" FROM xp_events
WHERE topic = %(topic)s AND "partition" = %(partition)s
  AND "offset" >= %(start)s AND "offset" < %(end)s
  AND (%(students)s::uuid[] IS NULL OR student_id = ANY(%(students)s::uuid[]));

-- name: ledger_ids_present
-- (id, student) pairs of the ledger among the events ``ids``/``students`` (equal lengths).
SELECT e.id, e.student_id
FROM unnest(%(ids)s::uuid[], %(students)s::uuid[]) AS k(id, student_id)
JOIN xp_events e USING (id, student_id);

-- name: student_balances
SELECT s.student_id, l.ledger_xp, l.ledger_events, t.total_xp, t.version
FROM unnest(%(students)s::uuid[]) AS s(student_id)
LEFT JOIN LATERAL (SELECT sum(delta) AS ledger_xp, nullif(count(*), 0) AS ledger_events
                   FROM xp_events e WHERE e.student_id = s.student_id) l ON true
LEFT JOIN xp_totals t ON t.student_id = s.student_id;

-- name: ledger_history
-- A student's accepted events in the order the worker applied them (partition order), each
-- with its season and the season's start.
SELECT l.student_id, l.id, l.kind, l.delta, l.created_at, l.word_set_id, l.homework_id,
       l.metadata, l."partition", l."offset", l.record_index, l.season_id, s.starts_at
FROM xp_ledger l LEFT JOIN xp_seasons_current s USING (season_id)
WHERE (%(students)s::uuid[] IS NULL OR l.student_id = ANY(%(students)s::uuid[]))
ORDER BY l.student_id, l."partition", l."offset", l.record_index;

-- name: ledger_sightings
-- Every XP ledger row as the dedupe sighting of its event (the changelog audit).
SELECT id, student_id, "partition", "offset", record_index, fingerprint, created_at FROM xp_events;

-- name: action_sightings
-- Every action ledger row as the dedupe sighting of its event (the changelog audit).
SELECT id, profile_id, "partition", "offset", 0, fingerprint, selected_at FROM action_events;

-- name: action_history
-- Action events in the order the worker folded them (partition order), for the changelog
-- audit's fold of vector progress.
SELECT id, action_id, profile_id, source, vector, qol_domain, selected_at, completed_at,
       duration, mode, metadata, fingerprint, "partition", "offset"
FROM action_events ORDER BY "partition", "offset";

-- name: totals_ahead_of_ledger
SELECT count(*) FROM xp_totals_stage s JOIN xp_totals t USING (student_id)
WHERE t.version > s.version;

-- name: backfill_events
-- Earlier backfill events of one legacy source, and whether an adjustment reversed each.
SELECT b.id, b.student_id, b.delta, (b.metadata->>'games_played')::int AS games,
       EXISTS (SELECT 1 FROM xp_events r
               WHERE r.student_id = b.student_id AND r.kind = 'adjustment'
                 AND r.metadata->>'reverses' = b.id::text) AS reversed,
       coalesce((b.metadata->>'generation')::int, 1) AS generation
FROM xp_events b
WHERE b.kind = 'backfill' AND b.metadata->>'source' = %(source)s
  AND (%(users)s::uuid[] IS NULL OR b.student_id = ANY(%(users)s::uuid[]));

-- name: totals_of
SELECT student_id, total_xp FROM xp_totals WHERE student_id = ANY(%(students)s::uuid[]);

-- name: ledger_sums
SELECT student_id, sum(delta) FROM xp_events
WHERE student_id = ANY(%(students)s::uuid[]) GROUP BY student_id;

-- name: stage_actions
CREATE TEMP TABLE IF NOT EXISTS action_events_stage
    (LIKE action_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;

-- name: copy_actions
COPY action_events_stage (id, action_id, profile_id, source, vector, qol_domain, selected_at,
                          completed_at, duration, mode, metadata, fingerprint, topic,
                          "partition", "offset") FROM STDIN;

-- name: insert_actions
-- Idempotent by (event id, profile): the first record of a pair wins (as the XP ledger).
WITH ins AS (
INSERT INTO action_events (id, action_id, profile_id, source, vector, qol_domain, selected_at,
                           completed_at, duration, mode, metadata, fingerprint, topic,
                           "partition", "offset")
SELECT id, action_id, profile_id, source, vector, qol_domain, selected_at, completed_at,
       duration, mode, metadata, fingerprint, topic, "partition", "offset"
FROM action_events_stage
ON CONFLICT (id, profile_id) DO NOTHING
RETURNING id, profile_id),
-- rows of this batch per id (a window, not a scan of ins per row: that was quadratic)
batch AS (SELECT id, profile_id, count(*) OVER (PARTITION BY id) AS same_id FROM ins)
SELECT count(*),
       count(*) FILTER (WHERE same_id > 1
                        OR EXISTS (SELECT 1 FROM action_events e
                                   WHERE e.id = batch.id AND e.profile_id <> batch.profile_id))
FROM batch;

-- name: stage_progress
CREATE TEMP TABLE IF NOT EXISTS vector_progress_stage
    (profile_id uuid, vector text, version text, step_index integer,
     draft_skipped_at timestamptz, created_at timestamptz, updated_at timestamptz,
     applied bigint) ON COMMIT DELETE ROWS;

-- name: copy_progress
COPY vector_progress_stage (profile_id, vector, version, step_index, draft_skipped_at,
                            created_at, updated_at, applied) FROM STDIN;

-- name: upsert_progress
-- Never backwards: a row is replaced only by one that folded more events.
INSERT INTO vector_progress AS p (profile_id, vector, version, step_index, draft_skipped_at,
                                  created_at, updated_at, applied)
SELECT profile_id, vector, version, step_index, draft_skipped_at, created_at, updated_at,
       applied
FROM vector_progress_stage
ON CONFLICT (profile_id, vector, version) DO UPDATE
SET step_index = EXCLUDED.step_index,
    draft_skipped_at = EXCLUDED.draft_skipped_at,
    updated_at = EXCLUDED.updated_at,
    applied = EXCLUDED.applied
WHERE p.applied < EXCLUDED.applied;

-- name: commit_ages
SELECT consumer_group, extract(epoch FROM now() - max(updated_at))::float8
FROM consumer_offsets GROUP BY consumer_group;

-- name: verify_duplicate_progress_keys
SELECT profile_id, vector, version, count(*) FROM vector_progress
GROUP BY profile_id, vector, version HAVING count(*) > 1;

-- name: verify_progress_missing_fields
SELECT id, profile_id, vector FROM vector_progress WHERE profile_id IS NULL OR vector IS NULL;

-- name: verify_actions_missing_fields
SELECT id, action_id, profile_id FROM action_events
WHERE action_id IS NULL OR profile_id IS NULL;

-- name: verify_ledger_missing_fields
SELECT id FROM xp_events
WHERE student_id IS NULL OR kind IS NULL OR delta IS NULL OR created_at IS NULL;

-- name: verify_five_vectors
SELECT p.profile_id, count(DISTINCT v.vector) FROM (
    SELECT profile_id FROM action_events UNION SELECT profile_id FROM vector_progress
) p LEFT JOIN vector_progress v ON v.profile_id = p.profile_id
    AND v.version = 'v1' AND v.vector = ANY(%(vectors)s::text[])
GROUP BY p.profile_id HAVING count(DISTINCT v.vector) < cardinality(%(vectors)s::text[]);

-- name: verify_row_counts
SELECT (SELECT count(*) FROM vector_progress), (SELECT count(*) FROM action_events),
       (SELECT count(*) FROM xp_events), (SELECT count(*) FROM xp_totals);

-- name: backfill_vectors
INSERT INTO vector_progress (profile_id, vector, step_index, version)
SELECT p.profile_id, v.vector, 0, 'v1' FROM (
    SELECT profile_id FROM action_events UNION SELECT profile_id FROM vector_progress
) p CROSS JOIN unnest(%(vectors)s::text[]) AS v(vector)
ON CONFLICT (profile_id, vector, version) DO NOTHING;

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: migrations_lock
SELECT pg_advisory_lock(%(lock)s);

-- name: migrations_unlock
SELECT pg_advisory_unlock(%(lock)s);

-- name: migrations_applied
SELECT version, name, checksum FROM schema_migrations;

-- name: migration_record
INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: migrations_newer
SELECT version, name FROM schema_migrations WHERE version > %(version)s ORDER BY version DESC;

-- name: migration_forget
DELETE FROM schema_migrations WHERE version = %(version)s;

-- name: stage_outcomes
CREATE TEMP TABLE IF NOT EXISTS xp_claim_outcomes_stage
    (outcome_id uuid, claim_id uuid, user_id uuid, type text, outcome text, reason text,
     decided_at timestamptz, receipt_id uuid, reward_day_id date, body jsonb, topic text,
     "partition" integer, "offset" bigint, reward_tz text, xp integer, streak_day integer,
     grace_consumed integer, policy_id text, policy_version integer, season_id text,
     tzdata text) ON COMMIT DELETE ROWS;

-- name: copy_outcomes
COPY xp_claim_outcomes_stage (outcome_id, claim_id, user_id, type, outcome, reason, decided_at,
                              receipt_id, reward_day_id, body, topic, "partition", "offset",
                              reward_tz, xp, streak_day, grace_consumed, policy_id,
                              policy_version, season_id, tzdata) FROM STDIN;

-- name: insert_outcomes
-- Idempotent by outcome id, and each award once (by receipt; one per learner and day).
-- Returns the outcomes inserted, and 0 (the ledgers' second count: ids held by two owners).
WITH awards AS (
    INSERT INTO xp_awards (award_id, user_id, reward_day_id, reward_tz, xp_awarded, streak_day,
                           grace_consumed, policy_id, policy_version, season_id, claim_id,
                           claimed_at, tzdata)
    SELECT receipt_id, user_id, reward_day_id, reward_tz, xp, streak_day, grace_consumed,
           policy_id, policy_version, season_id, claim_id, decided_at, tzdata
    FROM xp_claim_outcomes_stage WHERE outcome = 'awarded'
    ON CONFLICT DO NOTHING
    RETURNING 1
), ins AS (
    INSERT INTO xp_claim_outcomes (outcome_id, claim_id, user_id, type, outcome, reason,
                                   decided_at, receipt_id, reward_day_id, body, topic,
                                   "partition", "offset")
    SELECT outcome_id, claim_id, user_id, type, outcome, reason, decided_at, receipt_id,
           reward_day_id, body, topic, "partition", "offset"
    FROM xp_claim_outcomes_stage
    ON CONFLICT (outcome_id) DO NOTHING
    RETURNING 1
)
SELECT count(*), 0 FROM ins;

-- name: stage_grant
CREATE TEMP TABLE IF NOT EXISTS xp_grant_stage
    (user_id uuid, reward_tz text, segment text, pending_tz text, pending_from timestamptz,
     current_streak integer, longest_streak integer, last_reward_day_id date,
     grace_used integer, grace_tokens integer, model_state jsonb, version bigint)
    ON COMMIT DELETE ROWS;

-- name: copy_grant
COPY xp_grant_stage (user_id, reward_tz, segment, pending_tz, pending_from, current_streak,
                     longest_streak, last_reward_day_id, grace_used, grace_tokens, model_state,
                     version) FROM STDIN;

-- name: upsert_grant
-- Never backwards: a row is replaced only by a state that applied more decisions.
WITH users AS (
    INSERT INTO xp_users AS u (user_id, reward_tz, segment, pending_tz, pending_from, version,
                               updated_at)
    SELECT user_id, reward_tz, segment, pending_tz, pending_from, version, now()
    FROM xp_grant_stage
    ON CONFLICT (user_id) DO UPDATE
    SET reward_tz = EXCLUDED.reward_tz, segment = EXCLUDED.segment,
        pending_tz = EXCLUDED.pending_tz, pending_from = EXCLUDED.pending_from,
        version = EXCLUDED.version, updated_at = now()
    WHERE u.version < EXCLUDED.version
    RETURNING 1
)
INSERT INTO xp_streaks AS s (user_id, current_streak, longest_streak, last_reward_day_id,
                             grace_used, grace_tokens, model_state, version, updated_at)
SELECT user_id, current_streak, longest_streak, last_reward_day_id, grace_used, grace_tokens,
       model_state, version, now()
FROM xp_grant_stage
ON CONFLICT (user_id) DO UPDATE
SET current_streak = EXCLUDED.current_streak, longest_streak = EXCLUDED.longest_streak,
    last_reward_day_id = EXCLUDED.last_reward_day_id, grace_used = EXCLUDED.grace_used,
    grace_tokens = EXCLUDED.grace_tokens, model_state = EXCLUDED.model_state,
    version = EXCLUDED.version, updated_at = now()
WHERE s.version < EXCLUDED.version;

-- name: awards_vs_ledger
-- Awards without their ledger row, or with another amount (expected: none once lag is 0).
SELECT count(*) FROM xp_awards a
LEFT JOIN xp_events e ON e.id = a.award_id AND e.student_id = a.user_id
WHERE e.id IS NULL OR e.delta <> a.xp_awarded OR e.kind <> 'daily_login';

-- name: rules
SELECT policy_id, version, effective_day, definition FROM xp_rules ORDER BY policy_id, version;

-- name: seasons
SELECT season_id, starts_at, ends_at, calendar_version FROM xp_seasons_current
ORDER BY starts_at;

-- name: insert_rule
INSERT INTO xp_rules (policy_id, version, effective_day, definition, sha256, published_at,
                      topic, "partition", "offset")
VALUES (%(policy_id)s, %(version)s, %(effective_day)s, %(definition)s::jsonb, %(sha256)s,
        %(published_at)s, %(topic)s, %(partition)s, %(offset)s)
ON CONFLICT DO NOTHING;

-- name: insert_seasons
-- A newer calendar version: its seasons (xp_seasons_current shows the newest version).
INSERT INTO xp_seasons (calendar_version, season_id, starts_at, ends_at)
SELECT %(version)s, id, s, e
FROM unnest(%(ids)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS x(id, s, e)
ON CONFLICT DO NOTHING;

-- name: seasons_vs_ledger
-- Learners whose seasonal XP differs from the ledger: the newest season among their ledger
-- rows, and the sum of its deltas (expected: none once lag is 0).
WITH per_season AS (
    SELECT l.student_id, l.season_id, s.starts_at, sum(l.delta) AS xp
    FROM xp_ledger l JOIN xp_seasons_current s USING (season_id)
    GROUP BY l.student_id, l.season_id, s.starts_at
), newest AS (
    SELECT DISTINCT ON (student_id) student_id, season_id, xp
    FROM per_season ORDER BY student_id, starts_at DESC
)
SELECT count(*) FROM xp_totals t FULL OUTER JOIN newest n USING (student_id)
WHERE (t.season_id, t.seasonal_xp) IS DISTINCT FROM (n.season_id, coalesce(n.xp, 0));

-- name: ledger_positions
-- The fold worker's look-up of a batch's events past the dedupe horizon (``ids`` and
-- ``students`` of equal length: one event each).
SELECT e.id, e.student_id, e."partition", e."offset", e.record_index, e.fingerprint
FROM unnest(%(ids)s::uuid[], %(students)s::uuid[]) AS k(id, student_id)
JOIN xp_events e USING (id, student_id);

-- name: stored_outcomes
-- The grant replay's comparison (streams.audit.grants): every stored claim outcome.
SELECT outcome_id, body FROM xp_claim_outcomes;

-- name: stored_awards
-- The grant replay's comparison (streams.audit.grants): every stored award, in the order of
-- the replay's award key.
SELECT award_id, user_id, reward_day_id, xp_awarded, streak_day, policy_version,
       grace_consumed, season_id, claim_id
FROM xp_awards;

-- name: all_offsets
-- streams offsets show: every sink's stored next offsets.
SELECT consumer_group, topic, "partition", next_offset FROM consumer_offsets;

-- name: reset_offsets
-- streams offsets reset: set a sink's next offsets, backwards too (store_offsets only moves
-- them forward).
INSERT INTO consumer_offsets (consumer_group, topic, "partition", next_offset)
SELECT %(group)s, %(topic)s, p, o FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS x(p, o)
ON CONFLICT (consumer_group, topic, "partition") DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = now();

-- The harness's SQL (streams/lab): outcome checks, the bench's baselines, chaos faults.
-- Named blocks as in streams/db/queries.sql; {schema} and {table} are identifiers filled in
-- with psycopg.sql, %(x)s and %s are parameters.

-- name: ledger_counts
SELECT count(*), count(DISTINCT student_id) FROM xp_events;

-- name: totals_rows
SELECT student_id, total_xp, games_played, last_game_type FROM xp_totals;

-- name: action_ids
SELECT id FROM action_events;

-- name: progress_rows
SELECT profile_id, vector, step_index, draft_skipped_at
FROM vector_progress
WHERE version = 'v1' AND applied > 0;

-- name: awards_by_day
SELECT user_id, reward_day_id, xp_awarded FROM xp_awards ORDER BY user_id, reward_day_id;

-- name: streak_rows
SELECT user_id, current_streak, longest_streak, grace_tokens
FROM xp_streaks
WHERE last_reward_day_id IS NOT NULL;

-- name: award_ledger_rows
-- The awards' ledger rows (joined by receipt): their XP and count.
SELECT coalesce(sum(e.delta), 0), count(*)
FROM xp_events e JOIN xp_awards a ON a.award_id = e.id
WHERE e.kind = 'daily_login';

-- name: season_rows
SELECT student_id, season_id, seasonal_xp FROM xp_totals WHERE season_id IS NOT NULL;

-- name: current_season_xp
SELECT coalesce(sum(seasonal_xp), 0) FROM xp_balance;

-- name: campaign_counts
-- streams hostile: ledger rows (awards included), awards, action ledger rows.
SELECT (SELECT count(*) FROM xp_events), (SELECT count(*) FROM xp_awards),
       (SELECT count(*) FROM action_events);

-- name: active_writes
-- chaos: a sink's write to the ledger or the totals is running now.
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
  AND (query ILIKE '%xp_events%' OR query ILIKE '%xp_totals%' OR query ILIKE 'COMMIT%');

-- name: terminate_clients
-- chaos pg-terminate: every other client connection of this database.
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend';

-- name: totals_versions
-- bench latency: the version (events applied) of the students polled and when the worker
-- folded the last of them (seconds since the epoch).
SELECT student_id::text, version, extract(epoch FROM updated_at)::float8
FROM xp_totals WHERE student_id = ANY(%s::uuid[]);

-- name: create_like_ledger
-- A table {table} shaped like the ledger, without its indexes.
CREATE TABLE {table} (LIKE xp_events INCLUDING DEFAULTS);

-- name: create_like_ledger_indexed
CREATE TABLE {table} (LIKE xp_events INCLUDING ALL);

-- name: drop_table
DROP TABLE {table};

-- name: copy_rows
COPY {table} (id, student_id, kind, delta, word_set_id, homework_id, created_at, metadata,
              fingerprint, topic, "partition", "offset", record_index, record_ts)
FROM STDIN;

-- name: insert_row
-- One ledger row into {table} (the baselines: one INSERT per event).
INSERT INTO {table} (id, student_id, kind, delta, word_set_id, homework_id, created_at,
                     metadata, fingerprint, topic, "partition", "offset", record_index,
                     record_ts)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id, student_id) DO NOTHING;

-- name: trigger_baseline
-- The replaced design: the ledger insert fires a per-row trigger that upserts the totals.
CREATE TABLE trig_events (LIKE xp_events INCLUDING ALL);
CREATE TABLE trig_totals (student_id uuid PRIMARY KEY, total_xp bigint NOT NULL,
                          games_played integer NOT NULL, last_game_type text,
                          updated_at timestamptz NOT NULL);
CREATE FUNCTION trig_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO trig_totals AS t VALUES (NEW.student_id, NEW.delta,
      CASE WHEN NEW.kind IN ('daily_login', 'adjustment', 'backfill') THEN 0 ELSE 1 END,
      NEW.kind, now())
  ON CONFLICT (student_id) DO UPDATE SET total_xp = t.total_xp + EXCLUDED.total_xp,
      games_played = t.games_played + EXCLUDED.games_played,
      last_game_type = EXCLUDED.last_game_type, updated_at = now();
  RETURN NEW;
END $$;
CREATE TRIGGER trig_apply AFTER INSERT ON trig_events FOR EACH ROW EXECUTE FUNCTION trig_apply();

-- name: truncate_ledger
TRUNCATE xp_events;

-- name: truncate_sink
-- After the sink-alone stage: its rows and its stored offsets.
TRUNCATE xp_events, consumer_offsets;

-- name: delete_probe
-- The bench's probe student: its totals and ledger rows (one statement: it has parameters).
WITH totals AS (DELETE FROM xp_totals WHERE student_id = %(student)s)
DELETE FROM xp_events WHERE student_id = %(student)s;

-- name: create_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;
CREATE SCHEMA {schema};
CREATE TABLE {schema}.xp_events (LIKE public.xp_events INCLUDING ALL);
CREATE TABLE {schema}.xp_totals (LIKE public.xp_totals INCLUDING ALL);

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- name: fill_ledger
-- baselines: the parameters rows (ledger rows) and students; a doubled percent sign is
-- the modulo operator (the text goes through parameter substitution).
INSERT INTO xp_events (id, student_id, kind, delta, created_at, fingerprint, topic,
                       "partition", "offset")
SELECT gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(g %% %(students)s), 12, '0'))::uuid,
       'quiz', g %% 50, now() - make_interval(secs => g), '\x00'::bytea, 'bench', g %% 12, g
FROM generate_series(1, %(rows)s) g;

-- name: totals_from_ledger
INSERT INTO xp_totals (student_id, total_xp, version)
SELECT student_id, sum(delta), count(*) FROM xp_events GROUP BY student_id;

-- name: count_ledger
SELECT count(*) FROM xp_events;

-- name: some_students
SELECT student_id FROM xp_totals LIMIT 1000;

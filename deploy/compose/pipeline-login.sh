#!/bin/sh
# Runs once, when PostgreSQL initialises its data directory (docker-entrypoint-initdb.d):
# the pipeline's login role, holding only xp_writer (README, "Security"). xp_writer is created
# here first; the migrations (V003) create it only when it does not exist yet.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v password="$XP_PIPELINE_DB_PASSWORD" <<'SQL'
CREATE ROLE xp_writer NOLOGIN;
CREATE ROLE xp_pipeline LOGIN PASSWORD :'password';
GRANT xp_writer TO xp_pipeline;
SQL

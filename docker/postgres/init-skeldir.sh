#!/usr/bin/env bash
# PostgreSQL image init script (docker-entrypoint-initdb.d): runs once, when the server starts
# on an empty data directory. Creates the owner and runtime roles with the project's own
# skeldir/sql/create_roles.sql (mounted read-only: the same file `manage.py provision_database`
# runs), then the database, owned by the owner role, whose `public` schema only the owner may
# create objects in. Tables, grants and row-level security come from `manage.py migrate`.
#
# Environment (docker-compose.yml sets it): SKELDIR_DB_NAME, SKELDIR_DB_OWNER,
# SKELDIR_DB_OWNER_PASSWORD, SKELDIR_DB_APP_USER, SKELDIR_DB_APP_PASSWORD, and optionally
# SKELDIR_ROLES_SQL (where create_roles.sql is mounted). POSTGRES_USER and POSTGRES_DB are the
# image's own. Values travel as psql variables, quoted by psql: any password is safe here.
set -euo pipefail

psql --no-psqlrc --set ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set database="${SKELDIR_DB_NAME:?}" \
    --set owner_role="${SKELDIR_DB_OWNER:?}" \
    --set owner_password="${SKELDIR_DB_OWNER_PASSWORD:?}" \
    --set runtime_role="${SKELDIR_DB_APP_USER:?}" \
    --set runtime_password="${SKELDIR_DB_APP_PASSWORD:?}" \
    --set roles_sql="${SKELDIR_ROLES_SQL:-/opt/skeldir/create_roles.sql}" <<'SQL'
SET skeldir.owner_role = :'owner_role';
SET skeldir.owner_password = :'owner_password';
SET skeldir.runtime_role = :'runtime_role';
SET skeldir.runtime_password = :'runtime_password';
\i :roles_sql
RESET ALL;
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'owner_role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
\connect :"database"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner_role') \gexec
SQL

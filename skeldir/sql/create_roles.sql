-- Creates, or brings back in line, the two database roles of the Skeldir LLM platform.
-- Run it as a superuser (or a role with CREATEROLE). It is idempotent.
--
-- Parameters are custom settings, so the same file serves psql, docker's init scripts and
-- `manage.py provision_database`:
--   skeldir.owner_role, skeldir.owner_password, skeldir.runtime_role, skeldir.runtime_password
-- e.g.  PGOPTIONS="-c skeldir.owner_role=skeldir_owner -c skeldir.owner_password=... \
--                  -c skeldir.runtime_role=skeldir_app -c skeldir.runtime_password=..." \
--       psql -v ON_ERROR_STOP=1 -f create_roles.sql
--
-- owner:   owns every table and runs migrations. CREATEDB only so that the test runner
--          can create its test database; it is neither superuser nor BYPASSRLS, so FORCE
--          ROW LEVEL SECURITY binds it too.
-- runtime: used by web, workers, beat and commands. Owns nothing, is never superuser or
--          BYPASSRLS, and gets its table privileges from the migrations.
DO $roles$
DECLARE
    owner_role       text := current_setting('skeldir.owner_role');
    owner_password   text := nullif(current_setting('skeldir.owner_password', true), '');
    runtime_role     text := current_setting('skeldir.runtime_role');
    runtime_password text := nullif(current_setting('skeldir.runtime_password', true), '');
BEGIN
    IF owner_role = runtime_role THEN
        RAISE EXCEPTION 'the owner and runtime roles must differ (both are %)', owner_role;
    END IF;
    -- Serialise concurrent provisioning (two processes starting at once).
    PERFORM pg_advisory_xact_lock(hashtext('skeldir.create_roles'));

    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = owner_role) THEN
        EXECUTE format('CREATE ROLE %I', owner_role);
    END IF;
    EXECUTE format(
        'ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION CREATEDB PASSWORD %L',
        owner_role, owner_password);

    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = runtime_role) THEN
        EXECUTE format('CREATE ROLE %I', runtime_role);
    END IF;
    EXECUTE format(
        'ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION NOCREATEDB NOINHERIT PASSWORD %L',
        runtime_role, runtime_password);
END
$roles$;

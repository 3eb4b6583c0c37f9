-- The application's own database role (DESIGN section 7): `refguard_app` owns nothing and may
-- only read and write rows, so it can neither disable the triggers that keep the ledger and the
-- audit log append-only (ALTER TABLE ... DISABLE TRIGGER needs the owner) nor bypass them
-- (session_replication_role needs a superuser). Migrations run as the owner of the schema (the
-- role of REFGUARD_MIGRATE_DATABASE_URL); the application connects as refguard_app, or as a
-- login role that is a member of it (README, "Database roles").
--
-- Roles belong to the cluster, not to one database: the first database migrated creates it and
-- every other one of the cluster (the tests copy many from a template) finds it there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'refguard_app') THEN
        BEGIN
            CREATE ROLE refguard_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database of this cluster created it a moment ago
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role refguard_app does not exist and % may not create it',
                    current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'create it once as a superuser: CREATE ROLE refguard_app NOLOGIN';
        END;
    END IF;
END $$;

-- The application's privileges. tracker/db.py applies them again after every run of
-- migrations, so tables that later migrations add are covered too:
-- - rows of every table of the schema: SELECT, INSERT, UPDATE, DELETE;
-- - append-only tables (those guarded by refguard_append_only: the ledger, the audit log):
--   SELECT and INSERT only;
-- - schema_migrations: SELECT only (the application checks that the schema fits its code);
-- - never TRUNCATE, REFERENCES or TRIGGER, and nothing owned.
CREATE FUNCTION refguard_grant_app() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target text := current_schema();
    append_only regclass;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO refguard_app', target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I '
                   'TO refguard_app', target);
    EXECUTE format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA %I '
                   'FROM refguard_app', target);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO refguard_app', target);
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON %I.schema_migrations FROM refguard_app',
                   target);
    FOR append_only IN
        SELECT DISTINCT t.tgrelid::regclass
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE t.tgfoid = 'refguard_append_only'::regproc
          AND c.relnamespace = target::regnamespace
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE ON %s FROM refguard_app', append_only);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION refguard_grant_app() FROM PUBLIC;

-- Tables the owner creates later (by migrations, or the click partitions below) are granted as
-- they appear; refguard_grant_app() then takes UPDATE and DELETE back from append-only ones.
DO $$
BEGIN
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE '
                   'ON TABLES TO refguard_app', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES '
                   'TO refguard_app', current_schema());
    -- The flusher and importer stage rows in temporary tables. PUBLIC has both by default;
    -- a migrator that does not own the database may not grant them, which is fine then.
    BEGIN
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO refguard_app',
                       current_database());
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'could not grant CONNECT, TEMPORARY on database % to refguard_app',
            current_database();
    END;
END $$;

-- Click partitions are created at run time (by the flusher and importer for the month of a
-- click, by a job ahead of time), and CREATE TABLE ... PARTITION OF needs the owner of
-- `clicks`: the function runs as its owner, with a search_path nobody can slip a table into,
-- and only the application may call it.
ALTER FUNCTION refguard_ensure_click_partition(timestamptz) SECURITY DEFINER;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION refguard_ensure_click_partition(timestamptz) '
                   'SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE ALL ON FUNCTION refguard_ensure_click_partition(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refguard_ensure_click_partition(timestamptz) TO refguard_app;

-- ANALYZE needs the owner of a table (PostgreSQL 16 skips other tables with a warning). After a
-- bulk load the application refreshes the planner's statistics of its tables through this.
CREATE FUNCTION refguard_analyze(VARIADIC tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY tables LOOP
        IF NOT EXISTS (SELECT FROM pg_class
                       WHERE relname = name AND relkind IN ('r', 'p')
                         AND relnamespace = current_schema()::regnamespace) THEN
            RAISE EXCEPTION 'refguard_analyze: no table %', name USING ERRCODE = 'undefined_table';
        END IF;
        EXECUTE format('ANALYZE %I', name);
    END LOOP;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION refguard_analyze(text[]) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
REVOKE ALL ON FUNCTION refguard_analyze(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refguard_analyze(text[]) TO refguard_app;

SELECT refguard_grant_app();

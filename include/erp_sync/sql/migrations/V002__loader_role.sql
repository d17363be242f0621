-- V002: the loader's role. The loader's transactions run `SET LOCAL ROLE erp_loader`, so whatever the
-- connection's login may do, the load itself can only read, INSERT and UPDATE staging and write
-- erp_sync: no DELETE, TRUNCATE or DROP of staging data, no DDL.
--
-- Roles are cluster-wide while this file runs once per database, possibly in several databases at the
-- same moment (parallel tests): creating the role tolerates a concurrent creator.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'erp_loader') THEN
        BEGIN
            CREATE ROLE erp_loader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it first
        END;
    END IF;
END
$$;

-- A login that is not a superuser must be a member to SET ROLE erp_loader.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'erp_loader', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT erp_loader TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- Temporary tables hold each batch's COPY before the upsert.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO erp_loader', current_database());
END
$$;

GRANT USAGE ON SCHEMA erp_staging, erp_sync TO erp_loader;

GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA erp_staging TO erp_loader;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA erp_sync TO erp_loader;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA erp_sync TO erp_loader;

-- Tables that later migrations create (by the same migrating login) get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA erp_staging GRANT SELECT, INSERT, UPDATE ON TABLES TO erp_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA erp_sync GRANT SELECT, INSERT, UPDATE ON TABLES TO erp_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA erp_sync GRANT USAGE, SELECT ON SEQUENCES TO erp_loader;

-- The migration history is not the loader's to write.
REVOKE INSERT, UPDATE ON erp_sync.schema_migrations FROM erp_loader;

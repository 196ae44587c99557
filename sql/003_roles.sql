-- Least privilege: the pipeline writes through cryptoflow_writer (no DDL, no DELETE of
-- history), analysts and dashboards read through cryptoflow_reader. Both are group roles
-- (NOLOGIN); login users are made members of them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cryptoflow_writer') THEN
        CREATE ROLE cryptoflow_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cryptoflow_reader') THEN
        CREATE ROLE cryptoflow_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO cryptoflow_writer, cryptoflow_reader;
-- Staging tables for bulk upserts are temporary tables.
DO $$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO cryptoflow_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cryptoflow_writer, cryptoflow_reader',
                   current_database());
END
$$;
GRANT SELECT, INSERT, UPDATE ON raw_trades, metrics TO cryptoflow_writer;
GRANT SELECT ON raw_trades, metrics TO cryptoflow_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cryptoflow_reader;

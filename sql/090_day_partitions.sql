-- raw_trades and metrics partitioned by the UTC day of their time (trade_time, window_start)
-- with PostgreSQL's declarative partitioning (docs/serving.md): a query over recent hours
-- reads the last partitions only, and retention drops a whole old day as one cheap
-- DROP TABLE (pipelines/ops/retention.py). A partitioned table's unique keys must hold the
-- partition column: raw_trades' key becomes (symbol, trade_id, trade_time). A trade replayed
-- from Kafka or the lake has the exchange's same trade time, so the writers' ON CONFLICT on
-- that key stays exactly once; silver deduplicates (symbol, trade_id) before PostgreSQL.
--
-- Day partitions are named <table>_pYYYYMMDD and hold [day 00:00 UTC, next day 00:00 UTC).
-- There is no DEFAULT partition: every writer stages its rows first and calls
-- serving_ensure_days with the days they fall on (pipelines/serving.py), so no row ever
-- finds its day missing. The function is SECURITY DEFINER: the pipeline's login has no DDL
-- right and gets exactly this one. It creates a missing day as a plain table and ATTACHes
-- it, which locks the parent in SHARE UPDATE EXCLUSIVE mode: readers and writers of the
-- other days go on (CREATE TABLE ... PARTITION OF would block them).
--
-- Converting in place: an unpartitioned table (relkind 'r') is renamed aside, the
-- partitioned one created with the same columns, defaults and grants, a partition made for
-- every day it holds, its rows copied, the old table dropped. A database already at this
-- shape is left as it is.

CREATE OR REPLACE FUNCTION serving_ensure_days(target regclass, days date[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    day   date;
    part  text;
    made  integer := 0;
BEGIN
    IF target::text NOT IN ('raw_trades', 'metrics') THEN
        RAISE EXCEPTION 'serving_ensure_days: % is not a day-partitioned serving table', target;
    END IF;
    FOR day IN SELECT DISTINCT d FROM unnest(days) AS d WHERE d IS NOT NULL ORDER BY 1 LOOP
        part := format('%s_p%s', target::text, to_char(day, 'YYYYMMDD'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        -- Two writers meeting a new day take turns; the second finds it made.
        PERFORM pg_advisory_xact_lock(hashtext('cryptoflow serving_ensure_days'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS)', part, target);
        EXECUTE format(
            'ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            target, part, day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC'
        );
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

REVOKE ALL ON FUNCTION serving_ensure_days(regclass, date[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION serving_ensure_days(regclass, date[]) TO cryptoflow_writer;

-- One-off conversion of an unpartitioned table: ``old`` is the table's name, ``col`` its
-- time column, ``pkey`` the new primary key, ``indexes`` the CREATE INDEX statements of the
-- partitioned table (%I: the table). Rows keep their every column, mirrored_at included.
CREATE OR REPLACE FUNCTION pg_temp.serving_partition_table(
    old text, col text, pkey text, indexes text[]
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    aside  text := old || '_unpartitioned';
    days   date[];
    stmt   text;
    idx    record;
BEGIN
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(old)) IS DISTINCT FROM 'r' THEN
        RETURN;  -- already partitioned (or absent): nothing to do
    END IF;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', old, aside);
    FOR idx IN SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
               WHERE x.indrelid = aside::regclass LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', idx.relname, idx.relname || '_unpartitioned');
    END LOOP;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS) PARTITION BY RANGE (%I)',
                   old, aside, col);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', old, pkey);
    FOREACH stmt IN ARRAY indexes LOOP
        EXECUTE format(stmt, old);
    END LOOP;
    EXECUTE format('SELECT array_agg(DISTINCT (%I AT TIME ZONE ''UTC'')::date) FROM %I',
                   col, aside) INTO days;
    days := coalesce(days, '{}') || ARRAY[current_date, current_date + 1, current_date + 2];
    PERFORM serving_ensure_days(old::regclass, days);
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', old, aside);
    EXECUTE format('DROP TABLE %I', aside);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO cryptoflow_writer', old);
    EXECUTE format('GRANT SELECT ON %I TO cryptoflow_reader', old);
END
$$;

SET LOCAL "TimeZone" = 'UTC';

-- raw_trades: the dashboards filter on trade_time (latest hours, Grafana's time range) with
-- or without symbols, and ask the newest trade per symbol.
SELECT pg_temp.serving_partition_table(
    'raw_trades', 'trade_time', 'symbol, trade_id, trade_time',
    ARRAY['CREATE INDEX raw_trades_trade_time_idx ON %I (trade_time DESC)',
          'CREATE INDEX raw_trades_symbol_time_idx ON %I (symbol, trade_time DESC)']
);

-- metrics: the charts filter on window_start (and symbols, through the key); the page
-- header asks the newest window_end.
SELECT pg_temp.serving_partition_table(
    'metrics', 'window_start', 'symbol, window_start, window_end',
    ARRAY['CREATE INDEX metrics_window_start_idx ON %I (window_start DESC)',
          'CREATE INDEX metrics_window_end_idx ON %I (window_end DESC)']
);

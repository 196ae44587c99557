-- The newest rows of the day-partitioned raw_trades and metrics, and Grafana's pickers, read
-- from the last day's partitions only (docs/serving.md, "Queries without a time filter").
--
-- Why functions: a query without a time filter (ORDER BY trade_time DESC LIMIT 5,
-- max(trade_time), SELECT DISTINCT symbol) reads only the newest partitions when it runs (or
-- all of them), but PostgreSQL plans and locks every partition first: 25-45 us of CPU each,
-- so its cost follows the number of days kept. A bound prunes partitions while planning only
-- when it is a constant (a literal, a parameter): `trade_time > now() - interval '1 day'` is
-- pruned when the plan starts, after every partition has been planned, and costs as much as
-- no bound. And in plain SQL a fallback for "nothing in the last day" is planned too, whether
-- it runs or not. So each function runs a dynamic statement whose bound, now() - 1 day, is a
-- constant parameter (EXECUTE ... USING: planned for its values), and only when that finds
-- too little, a second statement over the older days. The answer is the unbounded query's,
-- whatever the data (the pickers: see below); when the newest row is older than a day, the
-- call costs what the unbounded query costs.
--
-- `symbols`: NULL for every symbol, or the symbols to look at (Grafana: ARRAY[$symbol]).
-- Ordinary functions (SECURITY INVOKER): the caller needs SELECT on the table. Idempotent:
-- CREATE OR REPLACE.

CREATE OR REPLACE FUNCTION latest_trades(n integer DEFAULT 5, symbols text[] DEFAULT NULL)
RETURNS SETOF raw_trades
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    recent timestamptz := now() - interval '1 day';
    found  bigint;
BEGIN
    RETURN QUERY EXECUTE
        'SELECT * FROM raw_trades WHERE trade_time >= $1 AND ($2 IS NULL OR symbol = ANY ($2))
         ORDER BY trade_time DESC LIMIT $3'
        USING recent, symbols, n;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < n THEN  -- fewer than n in the last day: the rest from the older days
        RETURN QUERY EXECUTE
            'SELECT * FROM raw_trades WHERE trade_time < $1 AND ($2 IS NULL OR symbol = ANY ($2))
             ORDER BY trade_time DESC LIMIT $3'
            USING recent, symbols, n - found;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION latest_metrics(n integer DEFAULT 5, symbols text[] DEFAULT NULL)
RETURNS SETOF metrics
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    recent timestamptz := now() - interval '1 day';
    found  bigint;
BEGIN
    RETURN QUERY EXECUTE
        'SELECT * FROM metrics WHERE window_start >= $1 AND ($2 IS NULL OR symbol = ANY ($2))
         ORDER BY window_start DESC LIMIT $3'
        USING recent, symbols, n;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < n THEN
        RETURN QUERY EXECUTE
            'SELECT * FROM metrics WHERE window_start < $1 AND ($2 IS NULL OR symbol = ANY ($2))
             ORDER BY window_start DESC LIMIT $3'
            USING recent, symbols, n - found;
    END IF;
END
$$;

-- max(trade_time) of raw_trades (of those symbols); NULL when there is none.
CREATE OR REPLACE FUNCTION newest_trade_time(symbols text[] DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    newest timestamptz;
BEGIN
    EXECUTE 'SELECT max(trade_time) FROM raw_trades
             WHERE trade_time >= $1 AND ($2 IS NULL OR symbol = ANY ($2))'
        INTO newest USING now() - interval '1 day', symbols;
    IF newest IS NULL THEN
        EXECUTE 'SELECT max(trade_time) FROM raw_trades WHERE $1 IS NULL OR symbol = ANY ($1)'
            INTO newest USING symbols;
    END IF;
    RETURN newest;
END
$$;

-- max(window_start) of metrics (of those symbols); NULL when there is none.
CREATE OR REPLACE FUNCTION newest_window_start(symbols text[] DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    newest timestamptz;
BEGIN
    EXECUTE 'SELECT max(window_start) FROM metrics
             WHERE window_start >= $1 AND ($2 IS NULL OR symbol = ANY ($2))'
        INTO newest USING now() - interval '1 day', symbols;
    IF newest IS NULL THEN
        EXECUTE 'SELECT max(window_start) FROM metrics WHERE $1 IS NULL OR symbol = ANY ($1)'
            INTO newest USING symbols;
    END IF;
    RETURN newest;
END
$$;

-- max(window_end) of metrics (of those symbols). metrics is partitioned by window_start: the
-- newest window_end belongs to a window that starts at most a day before the newest start
-- (windows are shorter than a day), so that is all it reads once the newest start is known.
CREATE OR REPLACE FUNCTION newest_window_end(symbols text[] DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    newest_start timestamptz := newest_window_start(symbols);
    newest       timestamptz;
BEGIN
    IF newest_start IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT max(window_end) FROM metrics
             WHERE window_start >= $1 AND ($2 IS NULL OR symbol = ANY ($2))'
        INTO newest USING newest_start - interval '1 day', symbols;
    RETURN newest;
END
$$;

-- Grafana's pickers: the symbols, and the window lengths in seconds, of the windows that start
-- in the day before the newest window (every day's when the newest is older than a day),
-- ascending. Unlike SELECT DISTINCT over all of metrics (a scan of every row ever kept), they
-- read one day: the symbols by a skip scan of the key (symbol, window_start, window_end), one
-- index probe per symbol and partition; the lengths from that day's rows. A symbol (or a
-- length) that has had no window for a day before the newest is no longer listed.
CREATE OR REPLACE FUNCTION metrics_symbols()
RETURNS TABLE (symbol text)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    newest_start timestamptz := newest_window_start();
BEGIN
    IF newest_start IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'WITH RECURSIVE s(symbol) AS (
             (SELECT symbol FROM metrics WHERE window_start >= $1 ORDER BY symbol LIMIT 1)
             UNION ALL
             SELECT (SELECT m.symbol FROM metrics m WHERE m.symbol > s.symbol
                     AND m.window_start >= $1 ORDER BY m.symbol LIMIT 1)
             FROM s WHERE s.symbol IS NOT NULL)
         SELECT symbol FROM s WHERE symbol IS NOT NULL'
        USING newest_start - interval '1 day';
END
$$;

CREATE OR REPLACE FUNCTION metrics_window_seconds()
RETURNS TABLE (seconds integer)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    newest_start timestamptz := newest_window_start();
BEGIN
    IF newest_start IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT DISTINCT extract(epoch FROM window_end - window_start)::integer FROM metrics
         WHERE window_start >= $1 ORDER BY 1'
        USING newest_start - interval '1 day';
END
$$;

GRANT EXECUTE ON FUNCTION latest_trades(integer, text[]), latest_metrics(integer, text[]),
    newest_trade_time(text[]), newest_window_start(text[]), newest_window_end(text[]),
    metrics_symbols(), metrics_window_seconds()
    TO cryptoflow_reader, cryptoflow_writer;

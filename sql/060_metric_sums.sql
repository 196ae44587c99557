-- Gold's fold (pipelines/gold/fold.py): exact additive sums per (symbol, window length,
-- window start), folded from each micro-batch's newly inserted raw_trades rows in the same
-- transaction that inserts them, so metrics (derived from these rows in that transaction)
-- always count exactly the trades raw_trades holds. lake names the Delta gold table the
-- window is copied to, change_seq orders the changes that copy has not seen yet.
CREATE SEQUENCE IF NOT EXISTS metric_change_seq;

CREATE TABLE IF NOT EXISTS metric_sums (
    symbol                     text           NOT NULL,
    window_seconds             integer        NOT NULL,
    window_start               timestamptz    NOT NULL,
    trade_count                bigint         NOT NULL,
    sum_price                  numeric        NOT NULL,
    sum_price_sq               numeric        NOT NULL,
    sum_notional               numeric        NOT NULL,
    total_volume               numeric        NOT NULL,
    min_price                  numeric(18, 8) NOT NULL,
    max_price                  numeric(18, 8) NOT NULL,
    buy_volume                 numeric        NOT NULL,
    sell_volume                numeric        NOT NULL,
    last_trade_time            timestamptz    NOT NULL,
    sum_exchange_latency_ms    numeric        NOT NULL,
    count_exchange_latency_ms  bigint         NOT NULL,
    sum_source_latency_ms      numeric        NOT NULL,
    count_source_latency_ms    bigint         NOT NULL,
    sum_end_to_end_latency_ms  numeric        NOT NULL,
    count_end_to_end_latency_ms bigint        NOT NULL,
    lake                       text           NOT NULL,
    change_seq                 bigint         NOT NULL DEFAULT nextval('metric_change_seq'),
    PRIMARY KEY (symbol, window_seconds, window_start)
);

CREATE INDEX IF NOT EXISTS metric_sums_lake_change_idx ON metric_sums (lake, change_seq);

-- The batch ledger: one row per micro-batch applied to the serving tables, written in the
-- batch's own transaction, so a batch replayed after a crash is recognised and skipped.
CREATE TABLE IF NOT EXISTS applied_batches (
    query_id    text        NOT NULL,
    batch_id    bigint      NOT NULL,
    trades      bigint      NOT NULL,
    quarantined bigint      NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (query_id, batch_id)
);

GRANT SELECT, INSERT, UPDATE ON metric_sums TO cryptoflow_writer;
GRANT SELECT, INSERT ON applied_batches TO cryptoflow_writer;
GRANT USAGE ON SEQUENCE metric_change_seq TO cryptoflow_writer;
GRANT SELECT ON metric_sums, applied_batches TO cryptoflow_reader;

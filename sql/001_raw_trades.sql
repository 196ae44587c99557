-- Serving table of validated, deduplicated trades (silver), one row per (symbol, trade_id).
-- The first twelve columns are the original pipeline's, in its order; the rest say where the
-- row came from and when the serving layer received it.
CREATE TABLE IF NOT EXISTS raw_trades (
    symbol                 text           NOT NULL,
    trade_id               bigint         NOT NULL,
    price                  numeric(18, 8) NOT NULL,
    quantity               numeric(18, 8) NOT NULL,
    is_buyer_maker         boolean        NOT NULL,
    event_time             timestamptz(3) NOT NULL,
    trade_time             timestamptz(3) NOT NULL,
    ingestion_time         timestamptz(3) NOT NULL,
    spark_time             timestamptz(3) NOT NULL,
    exchange_latency_ms    bigint,
    source_latency_ms      bigint,
    end_to_end_latency_ms  bigint,
    source                 text,
    kafka_partition        integer,
    kafka_offset           bigint,
    mirrored_at            timestamptz    NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, trade_id)
);

CREATE INDEX IF NOT EXISTS raw_trades_trade_time_idx ON raw_trades (trade_time DESC);

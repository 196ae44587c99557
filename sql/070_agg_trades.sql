-- Serving table of @aggTrade (cryptoflow/core/streams.py AGG_TRADE): validated, deduplicated
-- aggregate trades, one row per (symbol, agg_trade_id). An aggregate covers the trades
-- first_trade_id..last_trade_id of one taker order at one price.
CREATE TABLE IF NOT EXISTS agg_trades (
    symbol           text           NOT NULL,
    agg_trade_id     bigint         NOT NULL,
    price            numeric(18, 8) NOT NULL,
    quantity         numeric(18, 8) NOT NULL,
    first_trade_id   bigint         NOT NULL,
    last_trade_id    bigint         NOT NULL,
    is_buyer_maker   boolean        NOT NULL,
    event_time       timestamptz    NOT NULL,
    trade_time       timestamptz    NOT NULL,
    ingestion_time   timestamptz    NOT NULL,
    spark_time       timestamptz    NOT NULL,
    source           text,
    kafka_partition  integer,
    kafka_offset     bigint,
    mirrored_at      timestamptz    NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, agg_trade_id)
);

CREATE INDEX IF NOT EXISTS agg_trades_trade_time_idx ON agg_trades (trade_time DESC);

GRANT SELECT, INSERT, UPDATE ON agg_trades TO cryptoflow_writer;
GRANT SELECT ON agg_trades TO cryptoflow_reader;

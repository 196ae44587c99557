-- Serving table of @kline_<interval> (cryptoflow/core/streams.py KLINE_1M): the exchange's own
-- candles, one row per (symbol, interval, open_time). A closed kline (is_closed) is final;
-- an open one is a live row that later updates of the same minute overwrite, until the
-- closed one arrives. Column names are Binance's (see docs/streams/kline.md).
CREATE TABLE IF NOT EXISTS exchange_klines (
    symbol                  text           NOT NULL,
    interval                text           NOT NULL,
    open_time               timestamptz    NOT NULL,
    close_time              timestamptz    NOT NULL,
    open                    numeric(18, 8) NOT NULL,
    high                    numeric(18, 8) NOT NULL,
    low                     numeric(18, 8) NOT NULL,
    close                   numeric(18, 8) NOT NULL,
    volume                  numeric(28, 8) NOT NULL,
    quote_volume            numeric(28, 8) NOT NULL,
    trades                  bigint         NOT NULL,
    taker_buy_volume        numeric(28, 8) NOT NULL,
    taker_buy_quote_volume  numeric(28, 8) NOT NULL,
    first_trade_id          bigint         NOT NULL,
    last_trade_id           bigint         NOT NULL,
    is_closed               boolean        NOT NULL,
    event_time              timestamptz    NOT NULL,
    ingestion_time          timestamptz    NOT NULL,
    spark_time              timestamptz    NOT NULL,
    source                  text,
    kafka_partition         integer,
    kafka_offset            bigint,
    mirrored_at             timestamptz    NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, interval, open_time)
);

CREATE INDEX IF NOT EXISTS exchange_klines_open_time_idx ON exchange_klines (open_time DESC);

GRANT SELECT, INSERT, UPDATE ON exchange_klines TO cryptoflow_writer;
GRANT SELECT ON exchange_klines TO cryptoflow_reader;

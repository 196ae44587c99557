-- Serving table of @bookTicker (cryptoflow/core/streams.py BOOK_TICKER): best bid and ask
-- per update, one row per (symbol, update_id). Binance sends no event time on this stream:
-- ingestion_time (when ingestion received the frame) is the row's time.
CREATE TABLE IF NOT EXISTS book_ticker (
    symbol           text           NOT NULL,
    update_id        bigint         NOT NULL,
    bid_price        numeric(18, 8) NOT NULL,
    bid_quantity     numeric(18, 8) NOT NULL,
    ask_price        numeric(18, 8) NOT NULL,
    ask_quantity     numeric(18, 8) NOT NULL,
    ingestion_time   timestamptz    NOT NULL,
    spark_time       timestamptz    NOT NULL,
    source           text,
    kafka_partition  integer,
    kafka_offset     bigint,
    mirrored_at      timestamptz    NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, update_id)
);

CREATE INDEX IF NOT EXISTS book_ticker_ingestion_time_idx ON book_ticker (ingestion_time DESC);

GRANT SELECT, INSERT, UPDATE ON book_ticker TO cryptoflow_writer;
GRANT SELECT ON book_ticker TO cryptoflow_reader;

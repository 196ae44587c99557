-- Candles (klines) folded from trades (pipelines/gold/candles.py, pipelines/gold/fold.py):
-- one row per (symbol, interval, open_time) for every interval of CRYPTOFLOW_CANDLE_INTERVALS,
-- Binance's kline definition over the trades raw_trades holds. Folded in the transaction that
-- inserts the trades, from exactly the rows inserted: open / first_trade_id belong to the
-- lowest trade id, close / last_trade_id to the highest, and move together when a later batch
-- brings a trade with a lower / higher id. Volumes are exact numerics (every digit of Σp·q).
-- lake: the Delta gold table of the pipeline that folded the candle (as metric_sums.lake);
-- change_seq: which change the Delta copy (pipelines/gold/copy.py) has not seen yet.
CREATE SEQUENCE IF NOT EXISTS candle_change_seq;

CREATE TABLE IF NOT EXISTS candles (
    symbol                  text           NOT NULL,
    interval                text           NOT NULL,
    open_time               timestamptz    NOT NULL,
    close_time              timestamptz    NOT NULL,
    open                    numeric(18, 8) NOT NULL,
    high                    numeric(18, 8) NOT NULL,
    low                     numeric(18, 8) NOT NULL,
    close                   numeric(18, 8) NOT NULL,
    volume                  numeric        NOT NULL,
    quote_volume            numeric        NOT NULL,
    trades                  bigint         NOT NULL,
    taker_buy_volume        numeric        NOT NULL,
    taker_buy_quote_volume  numeric        NOT NULL,
    first_trade_id          bigint         NOT NULL,
    last_trade_id           bigint         NOT NULL,
    lake                    text           NOT NULL,
    change_seq              bigint         NOT NULL DEFAULT nextval('candle_change_seq'),
    PRIMARY KEY (symbol, interval, open_time)
);

CREATE INDEX IF NOT EXISTS candles_lake_change_idx ON candles (lake, change_seq);
CREATE INDEX IF NOT EXISTS candles_lake_interval_open_idx ON candles (lake, interval, open_time);

GRANT SELECT, INSERT, UPDATE ON candles TO cryptoflow_writer;
GRANT USAGE ON SEQUENCE candle_change_seq TO cryptoflow_writer;
GRANT SELECT ON candles TO cryptoflow_reader;

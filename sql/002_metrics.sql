-- Windowed metrics per symbol (gold). Definitions: DESIGN.md "Serving tables".
-- Unconstrained numeric keeps every digit Spark computed: no binary floats anywhere.
CREATE TABLE IF NOT EXISTS metrics (
    symbol                     text           NOT NULL,
    window_start               timestamptz    NOT NULL,
    window_end                 timestamptz    NOT NULL,
    trade_count                bigint         NOT NULL,
    total_volume               numeric        NOT NULL,
    avg_price                  numeric        NOT NULL,
    min_price                  numeric(18, 8) NOT NULL,
    max_price                  numeric(18, 8) NOT NULL,
    price_stddev               numeric,
    vwap                       numeric,
    buy_volume                 numeric        NOT NULL,
    sell_volume                numeric        NOT NULL,
    buy_sell_ratio             numeric,
    trade_intensity            numeric        NOT NULL,
    liquidity_proxy            numeric        NOT NULL,
    avg_exchange_latency_ms    numeric,
    avg_source_latency_ms      numeric,
    avg_end_to_end_latency_ms  numeric,
    mirrored_at                timestamptz    NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, window_start, window_end)
);

CREATE INDEX IF NOT EXISTS metrics_window_start_idx ON metrics (window_start DESC);

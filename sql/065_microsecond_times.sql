-- Binance gives microseconds when asked (timeUnit=MICROSECOND) and in its public-data files
-- from 2025 on: raw_trades keeps every digit of the exchange's times. Widening a timestamp's
-- precision does not rewrite the table.
ALTER TABLE raw_trades
    ALTER COLUMN event_time TYPE timestamptz,
    ALTER COLUMN trade_time TYPE timestamptz;

-- Reconciliation (pipelines/gold/reconcile.py, docs/gold.md): every closed 1 m candle of ours
-- against the exchange's closed 1 m kline of that minute (exchange_klines), field by field.
-- status: match | mismatch | missing_exchange | missing_ours; differences: the fields that
-- differ, {"high": {"ours": "...", "exchange": "..."}} ({} on a match). A minute is checked
-- again whenever a batch touches it, so a backfilled trade re-reconciles its minute.
-- lake / change_seq: as candles (the Delta copy).
CREATE SEQUENCE IF NOT EXISTS reconciliation_change_seq;

CREATE TABLE IF NOT EXISTS reconciliation (
    symbol       text        NOT NULL,
    minute       timestamptz NOT NULL,
    status       text        NOT NULL
                 CHECK (status IN ('match', 'mismatch', 'missing_exchange', 'missing_ours')),
    differences  jsonb       NOT NULL DEFAULT '{}',
    checked_at   timestamptz NOT NULL DEFAULT now(),
    lake         text        NOT NULL,
    change_seq   bigint      NOT NULL DEFAULT nextval('reconciliation_change_seq'),
    PRIMARY KEY (symbol, minute)
);

CREATE INDEX IF NOT EXISTS reconciliation_minute_idx ON reconciliation (minute DESC);
CREATE INDEX IF NOT EXISTS reconciliation_lake_change_idx ON reconciliation (lake, change_seq);

-- Aggregate trades against trades: an aggregate (agg_trades) whose trades first..last are all
-- in raw_trades must be those trades at its price, with its taker side, and their quantities
-- must sum to its quantity. Only aggregates that failed a check get a row; one that passes a
-- later check (a corrected aggregate) is set back to 'match' (the writer never deletes).
CREATE TABLE IF NOT EXISTS agg_reconciliation (
    symbol          text        NOT NULL,
    agg_trade_id    bigint      NOT NULL,
    first_trade_id  bigint      NOT NULL,
    last_trade_id   bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('match', 'mismatch')),
    differences     jsonb       NOT NULL DEFAULT '{}',
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, agg_trade_id)
);

-- Finding the aggregates that cover a trade id: the first whose last_trade_id is >= it.
CREATE INDEX IF NOT EXISTS agg_trades_symbol_last_trade_idx ON agg_trades (symbol, last_trade_id);

GRANT SELECT, INSERT, UPDATE ON reconciliation, agg_reconciliation TO cryptoflow_writer;
GRANT USAGE ON SEQUENCE reconciliation_change_seq TO cryptoflow_writer;
GRANT SELECT ON reconciliation, agg_reconciliation TO cryptoflow_reader;

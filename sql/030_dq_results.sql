-- One row per off-hot-path validation run (`cryptoflow validate`, or periodically in `up`):
-- which suite checked which Delta table version, whether it passed, and per expectation how
-- many rows it evaluated and how many failed (results: JSON array of
-- {rule, action, type, success, evaluated, unexpected, missing}).
CREATE TABLE IF NOT EXISTS dq_results (
    run_id                  uuid        PRIMARY KEY,
    suite                   text        NOT NULL,
    table_name              text        NOT NULL,
    delta_version           bigint      NOT NULL,
    as_of                   text,
    success                 boolean     NOT NULL,
    rows_validated          bigint      NOT NULL,
    expectations_evaluated  integer     NOT NULL,
    expectations_failed     integer     NOT NULL,
    results                 jsonb       NOT NULL,
    docs_index              text,
    started_at              timestamptz NOT NULL,
    duration_ms             bigint      NOT NULL,
    recorded_at             timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS dq_results_started_at_idx ON dq_results (table_name, started_at DESC);

GRANT SELECT, INSERT ON dq_results TO cryptoflow_writer;
GRANT SELECT ON dq_results TO cryptoflow_reader;

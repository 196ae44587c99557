-- The analytics of the pipeline itself: one row per streaming micro-batch of every job
-- (bronze, silver, gold, ...), written by pipelines/ops/batches.py. The Spark listener and
-- the jobs each fill the columns they know; a replayed batch upserts its own row.
CREATE TABLE IF NOT EXISTS pipeline_batches (
    job             text        NOT NULL,
    batch_id        bigint      NOT NULL,
    query_id        text,
    input_rows      bigint,
    output_rows     bigint,
    quarantined     bigint,
    late            bigint,
    duration_ms     bigint,
    latency_p50_ms  double precision,
    latency_p99_ms  double precision,
    kafka_lag       bigint,
    batch_time      timestamptz,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job, batch_id)
);

CREATE INDEX IF NOT EXISTS pipeline_batches_recorded_at_idx
    ON pipeline_batches (job, recorded_at DESC);

GRANT SELECT, INSERT, UPDATE ON pipeline_batches TO cryptoflow_writer;
GRANT SELECT ON pipeline_batches TO cryptoflow_reader;

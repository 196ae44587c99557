-- Frames the silver job rejected, with the raw bytes and the names of the expectations they
-- failed (mirror of the Delta quarantine table). One row per Kafka record: a replayed batch
-- cannot quarantine the same record twice.
CREATE TABLE IF NOT EXISTS quarantine (
    raw_value            bytea,
    kafka_key            text,
    topic                text        NOT NULL,
    kafka_partition      integer     NOT NULL,
    kafka_offset         bigint      NOT NULL,
    kafka_timestamp      timestamptz(3),
    source               text,
    symbol               text,
    trade_id             bigint,
    failed_expectations  text[]      NOT NULL,
    quarantined_at       timestamptz NOT NULL,
    mirrored_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE INDEX IF NOT EXISTS quarantine_quarantined_at_idx ON quarantine (quarantined_at DESC);

GRANT SELECT, INSERT, UPDATE ON quarantine TO cryptoflow_writer;
GRANT SELECT ON quarantine TO cryptoflow_reader;

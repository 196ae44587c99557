-- The batch ledger per partition of a batch. With CRYPTOFLOW_BATCH_PLACEMENT=executors each
-- executor task writes its symbols' rows in a transaction of its own (pipelines/batch_tasks.py)
-- and records (query, batch, part) in it; the driver placement writes part 0. A replayed task
-- finds its row and skips its transaction. Existing rows are part 0.
ALTER TABLE applied_batches ADD COLUMN IF NOT EXISTS part integer NOT NULL DEFAULT 0;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = 'applied_batches'::regclass AND i.indisprimary AND a.attname = 'part'
    ) THEN
        ALTER TABLE applied_batches DROP CONSTRAINT IF EXISTS applied_batches_pkey;
        ALTER TABLE applied_batches ADD PRIMARY KEY (query_id, batch_id, part);
    END IF;
END
$$;

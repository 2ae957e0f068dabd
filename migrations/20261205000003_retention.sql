-- Retention of the tables that only serve deduplication and audit (the retention job deletes
-- past `[retention]` in bounded batches). These indexes serve its cutoff scans, so a batch
-- never reads the whole table; a flood of forged callbacks cannot grow `rejected_callbacks`
-- without bound.

-- Completed keys by completion time (`updated_at` is set when a key completes); in-progress
-- and retryable keys are never deleted by the job.
CREATE INDEX idempotency_keys_completed_idx ON idempotency_keys (updated_at) WHERE state = 'completed';
CREATE INDEX callback_receipts_received_idx ON callback_receipts (received_at);
CREATE INDEX rejected_callbacks_received_idx ON rejected_callbacks (received_at);

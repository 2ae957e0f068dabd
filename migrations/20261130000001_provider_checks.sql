-- Durable provider checks: every need to ask a provider about a payment is one row here, never
-- only an in-memory timer or a spawned task. One row per payment: a new need moves `due_at`
-- earlier. Workers on every replica claim due rows with a lease (`leased_until`), call the
-- provider outside any transaction, then delete or reschedule the row.
--
-- `due_at` is NULL while a worker holds the row and nothing new was asked for; a need recorded
-- during the call sets it, so it is never lost when the worker finishes.
CREATE TABLE provider_checks (
    payment_id      TEXT PRIMARY KEY REFERENCES payments (id),
    due_at          TIMESTAMPTZ,
    reason          TEXT        NOT NULL,
    -- Consecutive failed attempts (drives the backoff); reset by an answer.
    attempts        INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT,
    leased_until    TIMESTAMPTZ,
    -- When the last check started: untrusted triggers (shopper returns, unsigned callbacks) are
    -- deferred to at least a minimum interval after it, never dropped.
    last_checked_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CHECK (due_at IS NOT NULL OR leased_until IS NOT NULL)
);
CREATE INDEX provider_checks_due_idx ON provider_checks (due_at) WHERE leased_until IS NULL;
CREATE INDEX provider_checks_lease_idx ON provider_checks (leased_until) WHERE leased_until IS NOT NULL;

-- Payments that were open before this migration get a check now; the worker decides what is due.
INSERT INTO provider_checks (payment_id, due_at, reason)
SELECT id, clock_timestamp(), 'scheduled' FROM payments WHERE status IN ('pending', 'processing', 'failed');

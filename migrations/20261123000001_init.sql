-- Payments, their append-only event log, idempotency keys, callback receipts and audit.

CREATE TABLE payments (
    id                   TEXT PRIMARY KEY,
    provider             TEXT        NOT NULL,
    account              TEXT        NOT NULL,
    merchant_reference   TEXT        NOT NULL,
    amount_minor         BIGINT      NOT NULL CHECK (amount_minor > 0),
    currency             CHAR(3)     NOT NULL,
    status               TEXT        NOT NULL CHECK (status IN
                            ('pending', 'processing', 'succeeded', 'failed', 'cancelled', 'expired')),
    checkout_url         TEXT,
    provider_checkout_id TEXT,
    provider_payment_id  TEXT,
    payment_method       TEXT,
    failure_code         TEXT,
    failure_message      TEXT,
    return_url           TEXT        NOT NULL DEFAULT '',
    cancel_url           TEXT        NOT NULL DEFAULT '',
    metadata             JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ,
    version              BIGINT      NOT NULL CHECK (version >= 1)
);

-- Callbacks that do not echo our id are matched by the provider's checkout id.
CREATE UNIQUE INDEX payments_provider_checkout_uidx
    ON payments (provider, provider_checkout_id) WHERE provider_checkout_id IS NOT NULL;
-- "Newest payment with this reference".
CREATE INDEX payments_reference_idx ON payments (merchant_reference, created_at DESC, id DESC);
-- Expiry sweep.
CREATE INDEX payments_open_expiry_idx ON payments (expires_at)
    WHERE status IN ('pending', 'processing', 'failed');

-- Append-only log. Applied rows (version NOT NULL) are one per change of the payment row and carry
-- a snapshot of the row after the change; other rows record what was received but not applied.
CREATE TABLE payment_events (
    sequence             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id           TEXT        NOT NULL REFERENCES payments (id),
    version              BIGINT,
    kind                 TEXT        NOT NULL,
    source               TEXT        NOT NULL CHECK (source IN
                            ('create', 'callback', 'refresh', 'reconciler', 'expiry')),
    status               TEXT        NOT NULL,
    previous_status      TEXT,
    provider_event_id    TEXT,
    provider_occurred_at TIMESTAMPTZ,
    detail               JSONB       NOT NULL DEFAULT '{}'::jsonb,
    snapshot             JSONB,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CHECK ((version IS NULL) = (snapshot IS NULL))
);
CREATE UNIQUE INDEX payment_events_version_uidx ON payment_events (payment_id, version) WHERE version IS NOT NULL;
CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, sequence);

-- Append-only: no UPDATE, no TRUNCATE; DELETE only by the retention job, which sets
-- `SET LOCAL paygate.allow_prune = 'on'` in its own transaction.
CREATE FUNCTION payment_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('paygate.allow_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'payment_events is append-only (%)', TG_OP;
END $$;
CREATE TRIGGER payment_events_no_update BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_append_only();
CREATE TRIGGER payment_events_no_truncate BEFORE TRUNCATE ON payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION payment_events_append_only();

-- Idempotency keys, scoped to provider + account.
CREATE TABLE idempotency_keys (
    provider     TEXT        NOT NULL,
    account      TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    fingerprint  BYTEA       NOT NULL,
    payment_id   TEXT        NOT NULL REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED,
    state        TEXT        NOT NULL CHECK (state IN ('in_progress', 'retryable', 'completed')),
    -- While in progress: after this time another request may take the key over (crash recovery).
    locked_until TIMESTAMPTZ,
    -- Fencing token of the current holder: a holder whose lease was taken over cannot write.
    lease_token  TEXT,
    -- A definitive error to replay (PROVIDER_REJECTED), as {reason, message, provider_code}.
    error        JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (provider, account, key)
);

-- Accepted callbacks, deduplicated on the provider's event id or a digest of the signed body.
CREATE TABLE callback_receipts (
    provider    TEXT        NOT NULL,
    dedupe_key  TEXT        NOT NULL,
    account     TEXT        NOT NULL,
    payment_id  TEXT        NOT NULL REFERENCES payments (id),
    event_id    TEXT        NOT NULL,
    outcome     TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (provider, dedupe_key)
);

-- Callbacks we refused (bad signature, stale, malformed, unknown payment): audit only, no secrets.
CREATE TABLE rejected_callbacks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    TEXT        NOT NULL,
    account     TEXT        NOT NULL,
    reason      TEXT        NOT NULL,
    body_sha256 TEXT        NOT NULL,
    payment_id  TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- Values every replica must share, e.g. generated sandbox webhook secrets.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

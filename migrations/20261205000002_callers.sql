-- Caller authentication: a payment belongs to the caller that created it (NULL: created while
-- authentication was off, visible only with `read_all`); an event names the caller whose
-- request caused it (NULL: a provider callback over HTTP, the reconciler, expiry).
ALTER TABLE payments ADD COLUMN caller TEXT;
ALTER TABLE payment_events ADD COLUMN caller TEXT;

-- Merchant-reference lookups within one caller's payments (GetPaymentStatus by reference).
CREATE INDEX payments_caller_reference ON payments (caller, merchant_reference, created_at DESC, id DESC);

-- Idempotency keys are scoped by caller ('' while authentication is off): two callers using the
-- same key create unrelated payments and never see each other's.
ALTER TABLE idempotency_keys ADD COLUMN caller TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (caller, provider, account, key);

-- ListPayments scoped to one caller: the same shapes as the unscoped indexes of
-- 20261205000001_cancel_and_list.sql, led by the owner (by reference: payments_caller_reference).
CREATE INDEX payments_caller_created_idx ON payments (caller, created_at DESC, id DESC);
CREATE INDEX payments_caller_status_created_idx ON payments (caller, status, created_at DESC, id DESC);
CREATE INDEX payments_caller_provider_created_idx ON payments (caller, provider, created_at DESC, id DESC);

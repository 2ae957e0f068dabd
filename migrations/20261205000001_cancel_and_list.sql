-- CancelCheckout and ListPayments.
--
-- Events may come from CancelCheckout (`source` `cancel`). The init migration declared the check
-- inline, so Postgres named it `payment_events_source_check`.
ALTER TABLE payment_events DROP CONSTRAINT payment_events_source_check;
ALTER TABLE payment_events ADD CONSTRAINT payment_events_source_check CHECK (source IN
    ('create', 'callback', 'refresh', 'reconciler', 'expiry', 'cancel'));

-- ListPayments: newest first (`created_at` DESC, id DESC) with keyset pagination. Each common
-- shape (no filter, one status, one provider, a merchant reference; each with a creation-time
-- range) is one index range scan in that order: no sequential scan, no sort. The reference shape
-- uses `payments_reference_idx` from the init migration.
CREATE INDEX payments_created_idx ON payments (created_at DESC, id DESC);
CREATE INDEX payments_status_created_idx ON payments (status, created_at DESC, id DESC);
CREATE INDEX payments_provider_created_idx ON payments (provider, created_at DESC, id DESC);

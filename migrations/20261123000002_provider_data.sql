-- Provider-private data kept with a payment (e.g. a session id our hosted page needs); never
-- returned to callers.
ALTER TABLE payments ADD COLUMN provider_data JSONB NOT NULL DEFAULT '{}'::jsonb;

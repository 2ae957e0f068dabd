-- Stream positions without serializing writers. Writers append events freely (no global lock, no
-- NOTIFY per transaction); a trigger queues each applied event. One sequencer per database (the
-- holder of a session advisory lock) moves committed queued events into `event_positions` in
-- small batches, numbering them consecutively in identity order, and sends one NOTIFY per batch.
-- Streams read positioned events only, in position order. Why resume stays exact:
-- src/store/events.rs and docs/streams.md.
--
-- `payment_events` stays append-only: positions live in their own table.
CREATE TABLE event_positions (
    position       BIGINT PRIMARY KEY,
    event_sequence BIGINT NOT NULL UNIQUE REFERENCES payment_events (sequence) ON DELETE CASCADE
);

CREATE TABLE event_queue (
    event_sequence BIGINT PRIMARY KEY REFERENCES payment_events (sequence) ON DELETE CASCADE
);

CREATE FUNCTION payment_events_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_queue (event_sequence) VALUES (NEW.sequence);
    RETURN NULL;
END $$;
CREATE TRIGGER payment_events_enqueue AFTER INSERT ON payment_events
    FOR EACH ROW WHEN (NEW.version IS NOT NULL) EXECUTE FUNCTION payment_events_enqueue();

-- Existing events keep their numbers as positions; new positions continue above the maximum.
INSERT INTO event_positions (position, event_sequence)
SELECT sequence, sequence FROM payment_events WHERE version IS NOT NULL;

-- Cronofy push notifications (with [callbacks] configured).
--
-- Each connected user grant gets a channel. channel_key is calgate's opaque
-- id in the channel's callback URL (/cronofy/notifications/<channel_key>);
-- channel_state is none, pending (to be created: due at channel_due_at, retried
-- with backoff, last failure in channel_error) or open (channel_id is Cronofy's).
-- event_tracking: unknown, on, or off when Cronofy refused to read the grant's
-- managed events. relink_url: where the user relinks a disconnected profile.
ALTER TABLE grants ADD COLUMN channel_key TEXT;
ALTER TABLE grants ADD COLUMN channel_id TEXT;
ALTER TABLE grants ADD COLUMN channel_state TEXT NOT NULL DEFAULT 'none';
ALTER TABLE grants ADD COLUMN channel_due_at BIGINT;
ALTER TABLE grants ADD COLUMN channel_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE grants ADD COLUMN channel_error TEXT;
ALTER TABLE grants ADD COLUMN event_tracking TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE grants ADD COLUMN relink_url TEXT;
CREATE UNIQUE INDEX grants_by_channel_key ON grants (channel_key);
CREATE INDEX grants_channel_due ON grants (channel_state, channel_due_at);

-- What calgate last knows of each event it wrote: a digest of start, end and
-- summary after its last successful write (or 'deleted'), moved forward when
-- a change is reported. A notification whose read shows this state is an
-- echo of calgate's own write; one that shows another is an EventChanged,
-- recorded once (compare-and-swap on the digest).
CREATE TABLE event_writes (
    tenant_id   TEXT   NOT NULL,
    sub         TEXT   NOT NULL,
    calendar_id TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    digest      TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sub, calendar_id, event_id)
);
CREATE INDEX event_writes_by_age ON event_writes (updated_at);

-- Notifications received and not yet processed: answered 200 at once, then
-- worked through in the background with retries. The id is a SHA-256 of the
-- channel key and the body, so a notification delivered twice (or to two
-- replicas) is queued once; a repeat bumps generation, and a row whose
-- generation moved while it was processed is processed again (the repeat may
-- announce changes made after that processing read).
CREATE TABLE notifications (
    id              TEXT   PRIMARY KEY,
    tenant_id       TEXT   NOT NULL,
    sub             TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    changes_since   TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    generation      BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at);

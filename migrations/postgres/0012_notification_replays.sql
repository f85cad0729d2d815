-- Replayed notifications cost once (issue #25). A processed notification is
-- kept as a marker (processed_at set, never due) for the replay window, so
-- the same body delivered again is not processed again; replays_left lets one
-- repeat through per window (two changes in one second can carry the same
-- body). Markers past the window are pruned.
ALTER TABLE notifications ADD COLUMN processed_at BIGINT;
ALTER TABLE notifications ADD COLUMN replays_left BIGINT NOT NULL DEFAULT 1;
CREATE INDEX notifications_processed ON notifications (processed_at);

-- Pages of changed events read per channel (tenant, sub) in the current
-- minute: a grant's notifications read at most a fixed number a minute.
CREATE TABLE channel_pages (
    tenant_id    TEXT   NOT NULL,
    sub          TEXT   NOT NULL,
    window_start BIGINT NOT NULL,
    pages        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sub)
);

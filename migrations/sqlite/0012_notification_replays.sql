-- Replayed notifications cost once (issue #25). A processed notification is
-- kept as a marker (processed_at set, never due) for an hour, so the same
-- body delivered again within a second of its processing is coalesced into
-- one processing after that second instead of being processed at once (two
-- changes in one second can carry the same body, so a repeat is never
-- dropped). Markers past the hour are pruned.
ALTER TABLE notifications ADD COLUMN processed_at BIGINT;
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

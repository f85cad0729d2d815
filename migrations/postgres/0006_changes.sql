-- The change stream (WatchChanges). Each tenant's changes are numbered 1, 2,
-- 3… without gaps. change_sequences holds the last number given; taking the
-- next locks that row until the recording transaction commits, so changes
-- become visible in the order of their numbers: a watcher that has read up to
-- N never misses an N-1 committed later.
CREATE TABLE change_sequences (
    tenant_id      TEXT   PRIMARY KEY,
    last_seq       BIGINT NOT NULL,
    -- Changes numbered up to this one were removed by retention: a cursor
    -- below it is CURSOR_EXPIRED.
    pruned_through BIGINT NOT NULL DEFAULT 0
);

-- Recorded in the same transaction as the state change they describe.
-- payload is JSON (see src/store/changes.rs); it never holds a token.
CREATE TABLE changes (
    tenant_id   TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    sub         TEXT   NOT NULL,
    user_ref    TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    payload     TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX changes_by_age ON changes (recorded_at);

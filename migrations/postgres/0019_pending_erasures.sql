-- Erasures waiting for Cronofy to confirm the person's events deleted
-- (issue #26): ForgetUser(delete_events) revokes only once a read of the
-- application's own events finds none of the tenant's left, because Cronofy
-- may drop a delete it accepted (202) but had not applied when the
-- authorization ends. Until then the grant is hidden from callers (every
-- lookup skips a sub listed here) and keeps its tokens for the erasure
-- worker, which deletes again, reads again, and then revokes and erases it.
-- The person's user_refs are erased when the row is made. `actor` and
-- `request_id` name who asked, for the audit row written at the end.
CREATE TABLE pending_erasures (
    tenant_id       TEXT    NOT NULL,
    sub             TEXT    NOT NULL,
    requested_at    BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    actor           TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, sub)
);
CREATE INDEX pending_erasures_due ON pending_erasures (next_attempt_at);

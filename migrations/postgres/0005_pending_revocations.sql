-- Revocations at Cronofy still to be made. RevokeGrant erases a grant's
-- tokens at once, whatever Cronofy answers; when Cronofy's revoke fails, the
-- grant waits here and a background worker retries it (by sub, with the
-- tenant's client credentials: no token is needed) with backoff.
CREATE TABLE pending_revocations (
    tenant_id       TEXT    NOT NULL,
    sub             TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, sub)
);
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at);

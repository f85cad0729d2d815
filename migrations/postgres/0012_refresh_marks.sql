-- A refresh in flight (issue #25): written, in its own transaction, just
-- before calgate sends a refresh token to Cronofy, and removed once Cronofy's
-- answer is known. A mark of another attempt still standing when a refresh
-- meets invalid_grant means an earlier refresh's answer was lost (its replica
-- died waiting): the grant then needs re-authorization with the reason
-- REFRESH_ANSWER_LOST, not INVALID_GRANT.
CREATE TABLE refresh_marks (
    tenant_id  TEXT   NOT NULL,
    sub        TEXT   NOT NULL,
    attempt    TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sub, attempt)
);

-- Queued writes (issue #29): UpsertEvent and DeleteEvent with
-- WRITE_MODE_QUEUED, accepted and stored, delivered by any replica.
-- A row is QUEUED until it settles once (delivered, failed or superseded);
-- then its sealed body goes and the row stays for GetWrite until the
-- change stream's retention removes it. A newer write to the same
-- (tenant, sub, calendar, event) supersedes older QUEUED ones not claimed;
-- a claim (claim, claimed_until) is one replica's delivery attempt, and only
-- the oldest QUEUED write of an event is ever claimed, so an event's writes
-- reach Cronofy in the order they were accepted. Times are Unix milliseconds.
-- body: the event Cronofy is sent, sealed (AES-256-GCM) under key_id for
-- (tenant, sub, write_id); NULL for a delete and once settled.
-- error: the last failure (JSON, see src/domain/write_queue.rs).
CREATE TABLE queued_writes (
    write_id        TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    sub             TEXT    NOT NULL,
    user_ref        TEXT,
    calendar_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    key_id          TEXT,
    body            BLOB,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    error           TEXT,
    accepted_at     BIGINT  NOT NULL,
    settled_at      BIGINT,
    superseded_by   TEXT,
    next_attempt_at BIGINT  NOT NULL,
    claim           TEXT,
    claimed_until   BIGINT
);
CREATE INDEX queued_writes_due ON queued_writes (state, next_attempt_at);
CREATE INDEX queued_writes_event ON queued_writes (tenant_id, sub, calendar_id, event_id, state);
CREATE INDEX queued_writes_settled ON queued_writes (settled_at);

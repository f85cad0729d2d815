-- calgate on PostgreSQL: the same schema as migrations/sqlite, plus the state
-- replicas share (request budgets, circuit breakers).

-- Grants, keyed by (tenant, Cronofy sub). Tokens are AES-256-GCM ciphertexts
-- (nonce || ciphertext || tag) made with the key named in key_id; the
-- associated data binds tenant, sub and purpose.
CREATE TABLE grants (
    tenant_id         TEXT    NOT NULL,
    sub               TEXT    NOT NULL,
    account_id        TEXT    NOT NULL DEFAULT '',
    scope             TEXT    NOT NULL DEFAULT '',
    connect_mode      TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    provider_name     TEXT    NOT NULL DEFAULT '',
    profile_name      TEXT    NOT NULL DEFAULT '',
    free_busy_mode    BOOLEAN NOT NULL DEFAULT FALSE,
    key_id            TEXT,
    access_token      BYTEA,
    refresh_token     BYTEA,
    access_expires_at BIGINT,
    -- Bumped by every token write: writers compare-and-swap on it.
    version           BIGINT  NOT NULL,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, sub)
);

-- A caller's own ids for users; several may point at one grant.
CREATE TABLE user_refs (
    tenant_id TEXT   NOT NULL,
    user_ref  TEXT   NOT NULL,
    sub       TEXT   NOT NULL,
    bound_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_ref),
    FOREIGN KEY (tenant_id, sub) REFERENCES grants (tenant_id, sub)
);
CREATE INDEX user_refs_by_grant ON user_refs (tenant_id, sub, bound_at);

-- Nonces of OAuth states already redeemed (single-use state, RFC 9700),
-- shared by every replica.
CREATE TABLE redeemed_states (
    nonce      TEXT   PRIMARY KEY,
    tenant_id  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX redeemed_states_by_expiry ON redeemed_states (expires_at);

-- Requests each tenant's Cronofy application received, per fixed window
-- ('s' = one second, 'm' = one minute), counted by every replica.
CREATE TABLE rate_windows (
    tenant_id    TEXT   NOT NULL,
    window_kind  TEXT   NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, window_kind, window_start)
);

-- Circuit breakers per (tenant, data centre), shared by every replica.
-- open_until (unix milliseconds) in the future: open; a replica that moves an
-- expired open_until forward has claimed the half-open probe.
CREATE TABLE breakers (
    name       TEXT   PRIMARY KEY,
    failures   BIGINT NOT NULL DEFAULT 0,
    open_until BIGINT NOT NULL DEFAULT 0
);

-- Grants, keyed by (tenant, Cronofy sub). Tokens are AES-256-GCM ciphertexts
-- (nonce || ciphertext || tag) made with the key named in key_id; the
-- associated data binds tenant, sub and purpose, so a ciphertext copied to
-- another row or column does not decrypt.
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
    free_busy_mode    INTEGER NOT NULL DEFAULT 0,
    key_id            TEXT,
    access_token      BLOB,
    refresh_token     BLOB,
    access_expires_at INTEGER,
    -- Bumped by every token write: writers compare-and-swap on it.
    version           INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, sub)
);

-- A caller's own ids for users; several may point at one grant.
CREATE TABLE user_refs (
    tenant_id TEXT    NOT NULL,
    user_ref  TEXT    NOT NULL,
    sub       TEXT    NOT NULL,
    bound_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_ref),
    FOREIGN KEY (tenant_id, sub) REFERENCES grants (tenant_id, sub)
);
CREATE INDEX user_refs_by_grant ON user_refs (tenant_id, sub, bound_at);

-- Nonces of OAuth states already redeemed (single-use state, RFC 9700).
CREATE TABLE redeemed_states (
    nonce      TEXT    PRIMARY KEY,
    tenant_id  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX redeemed_states_by_expiry ON redeemed_states (expires_at);

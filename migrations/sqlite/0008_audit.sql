-- The audit trail: an append-only record of credential lifecycle events,
-- hash-chained per tenant (see src/store/audit.rs). sub and user_ref are kept
-- in clear while the person's data exists and set to NULL when it is erased
-- (ForgetUser, purge-tenant); their keyed hashes (HMAC-SHA-256 under the
-- store's audit key) stay, and the chain covers only the hashed form, so
-- erasure never breaks it. Never holds a token, code or secret.
CREATE TABLE audit_events (
    tenant_id     TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    sub           TEXT,
    user_ref      TEXT,
    sub_hash      TEXT   NOT NULL,
    user_ref_hash TEXT   NOT NULL,
    actor         TEXT   NOT NULL,
    request_id    TEXT   NOT NULL,
    detail        TEXT   NOT NULL,
    prev_hash     TEXT   NOT NULL,
    hash          TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_by_sub_hash ON audit_events (tenant_id, sub_hash);
CREATE INDEX audit_events_by_user_ref_hash ON audit_events (tenant_id, user_ref_hash);
CREATE INDEX audit_events_by_age ON audit_events (recorded_at);

-- Each tenant's chain head. Taking the next number locks this row until the
-- recording transaction commits, so rows chain in number order. Rows up to
-- pruned_through were removed by retention; pruned_hash is the hash of the
-- last of them, which the first remaining row must carry as prev_hash.
CREATE TABLE audit_heads (
    tenant_id      TEXT   PRIMARY KEY,
    last_seq       BIGINT NOT NULL,
    last_hash      TEXT   NOT NULL,
    pruned_through BIGINT NOT NULL DEFAULT 0,
    pruned_hash    TEXT   NOT NULL DEFAULT ''
);

-- Keys calgate makes for itself: the audit trail's pseudonym key. Each is
-- sealed under the encryption key that was current when a replica started
-- (one row per key, so removing an older key after a rotation keeps it
-- readable); `calgate rekey` keeps only the row under the current key.
CREATE TABLE store_keys (
    name       TEXT   NOT NULL,
    key_id     TEXT   NOT NULL,
    sealed     BLOB   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, key_id)
);

-- `calgate rekey` and calgate_grants_by_key find grants by their key.
CREATE INDEX grants_by_key ON grants (key_id);

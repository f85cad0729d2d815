-- Enterprise Connect member authorizations: requested through a service
-- account, completed (or failed) when Cronofy calls back. The id is random
-- and unguessable: Cronofy's error callbacks carry no state, so the id in the
-- callback URL is what finds the authorization.
CREATE TABLE enterprise_authorizations (
    id                  TEXT   PRIMARY KEY,
    tenant_id           TEXT   NOT NULL,
    service_account_sub TEXT   NOT NULL,
    email               TEXT   NOT NULL,
    user_ref            TEXT   NOT NULL,
    scope               TEXT   NOT NULL,
    callback_url        TEXT   NOT NULL,
    status              TEXT   NOT NULL,
    error_key           TEXT,
    grant_sub           TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX enterprise_authorizations_by_tenant ON enterprise_authorizations (tenant_id, created_at);

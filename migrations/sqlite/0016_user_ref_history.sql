-- Every sub a user_ref was ever bound to (issue #26): user_refs keeps only
-- the latest binding, so a user_ref connected twice (two subs over time) lost
-- its first grant from view, and ForgetUser left that grant and its tokens.
-- Rows are erased with the person (ForgetUser) or the tenant (purge-tenant).
CREATE TABLE user_ref_history (
    tenant_id TEXT    NOT NULL,
    user_ref  TEXT    NOT NULL,
    sub       TEXT    NOT NULL,
    bound_at  BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, user_ref, sub)
);
CREATE INDEX user_ref_history_by_sub ON user_ref_history (tenant_id, sub);
INSERT INTO user_ref_history (tenant_id, user_ref, sub, bound_at)
  SELECT tenant_id, user_ref, sub, bound_at FROM user_refs;

-- Refresh ahead of need. last_used_at: when a call last used the grant
-- (recorded at most about once an hour per grant and replica); only grants
-- used within `refresh_ahead.used_within` are refreshed in the background.
-- refresh_claimed_until: a replica's claim on a background refresh, so
-- replicas never refresh the same grant twice; it also paces retries.
ALTER TABLE grants ADD COLUMN last_used_at BIGINT;
ALTER TABLE grants ADD COLUMN refresh_claimed_until BIGINT;
UPDATE grants SET last_used_at = updated_at;
CREATE INDEX grants_by_expiry ON grants (access_expires_at);

-- A keyed audit trail (issue #26): row hashes become HMACs under the sealed
-- audit key (prefix k1:, computed by calgate), and retention's pruning mark
-- is signed too: when the last removed row was recorded, when retention
-- removed it, the retention then, and an HMAC of all of it. A database writer
-- without the key can no longer wipe the chain and claim retention did it.
ALTER TABLE audit_heads ADD COLUMN pruned_recorded_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_heads ADD COLUMN pruned_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_heads ADD COLUMN pruned_retention BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_heads ADD COLUMN pruned_mac TEXT NOT NULL DEFAULT '';

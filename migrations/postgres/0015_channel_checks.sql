-- Open channels are checked against Cronofy's list (issue #27): a channel
-- Cronofy closed (days of failed deliveries, say) is reopened. channel_check_at
-- is when the next check is due; channel_seen_at is the last time the channel
-- was known open (opened, or found in the list); channel_gap_since is set
-- while a channel found missing waits to be reopened: events changed since
-- then may not have been notified.
ALTER TABLE grants ADD COLUMN channel_check_at BIGINT;
ALTER TABLE grants ADD COLUMN channel_seen_at BIGINT;
ALTER TABLE grants ADD COLUMN channel_gap_since BIGINT;
-- Channels opened before this migration: first checks spread over six hours.
UPDATE grants SET channel_check_at = extract(epoch FROM now())::bigint + floor(random() * 21600)::bigint,
  channel_seen_at = extract(epoch FROM now())::bigint
  WHERE channel_state = 'open';
CREATE INDEX grants_channel_check ON grants (channel_state, channel_check_at);

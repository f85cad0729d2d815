-- A refresh whose answer never arrived (timeout, 5xx after sending) may have
-- rotated the refresh token at Cronofy. refresh_unsure_since records when the
-- first such refresh happened, until a refresh succeeds; if Cronofy then
-- refuses the stored refresh token, status_reason says REFRESH_ANSWER_LOST
-- instead of INVALID_GRANT, so operators can tell it from a user revoking.
ALTER TABLE grants ADD COLUMN refresh_unsure_since BIGINT;
ALTER TABLE grants ADD COLUMN status_reason TEXT;

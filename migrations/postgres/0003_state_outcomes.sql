-- What a redeemed state led to: the grant its code was exchanged for, and a
-- SHA-256 of that code. A caller that gave up during the exchange retries
-- with the same code and state and is given that grant instead of
-- STATE_INVALID. (The code is spent once exchanged; its digest reveals nothing.)
ALTER TABLE redeemed_states ADD COLUMN grant_sub TEXT;
ALTER TABLE redeemed_states ADD COLUMN code_sha256 TEXT;

-- An account's profiles as UserInfo last described them (issue #27): JSON, an
-- array of {profile_id, kind (calendar | conferencing), provider_name,
-- profile_name, connected, relink_url?, calendar_ids?}. NULL until calgate
-- reads UserInfo (when a channel opens, on profile notifications). Writes are
-- refused only to calendars of a disconnected calendar profile.
ALTER TABLE grants ADD COLUMN profiles TEXT;

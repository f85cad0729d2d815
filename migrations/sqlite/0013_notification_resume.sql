-- Reading a notification's changed events goes on where it stopped (issue
-- #27): when a grant's pages for the minute are spent, the URL of the next
-- unread page is kept here, and the next attempt starts from it. Cleared
-- when the notification is finished.
ALTER TABLE notifications ADD COLUMN resume_page TEXT;

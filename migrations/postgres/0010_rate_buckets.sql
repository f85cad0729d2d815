-- Shared request budgets as token buckets instead of fixed clock windows.
-- Fixed windows let twice a window's limit through across a boundary (the
-- end of one second and the start of the next), which Cronofy, counting in
-- its own windows, may answer with 429s. A bucket per application holds a
-- tenth of each limit and refills the rest evenly, so no sliding second or
-- minute ever carries more than the limit — the rule each replica's own
-- bucket already followed. One row per application key holds both windows,
-- so a claim passes both or neither in one statement. The times are the
-- GCRA's "theoretical arrival time" in unix milliseconds: a bucket is full
-- when its time is in the past. Time is PostgreSQL's (clock_timestamp()),
-- so replicas whose clocks disagree still share one bucket; claimed_at_ms is
-- the time of the last claim, from which a refused one learns its wait.
-- rate_windows stays for replicas of the previous release during a rolling
-- upgrade; nothing new writes it, and it is emptied as its windows end.
CREATE TABLE rate_buckets (
    application    TEXT             PRIMARY KEY,
    second_tat_ms  DOUBLE PRECISION NOT NULL,
    minute_tat_ms  DOUBLE PRECISION NOT NULL,
    granted        BIGINT           NOT NULL,
    claimed_at_ms  DOUBLE PRECISION NOT NULL
);

-- Each site's uptime per closed UTC day, summed from its hourly 'up' rollups: the status page reads
-- at most 90 of these per site instead of ~2,160 hourly rows. Filled incrementally by the hourly
-- rollup run (same transaction, watermark '1d'), which re-derives a day whenever one of its hours
-- is rebuilt (a late sample folded in), so a row always equals the sum of its day's hourly rows.
CREATE TABLE site_uptime_daily (
    site_id uuid        NOT NULL,
    day     timestamptz NOT NULL,  -- the day's start, 00:00 UTC
    up      double precision NOT NULL,  -- sum of the day's 'up' samples (1 = up)
    samples bigint      NOT NULL CHECK (samples > 0),
    PRIMARY KEY (site_id, day)
);

ALTER TABLE rollup_watermarks DROP CONSTRAINT rollup_watermarks_name_check,
    ADD CONSTRAINT rollup_watermarks_name_check CHECK (name IN ('1m', '1h', '1d'));

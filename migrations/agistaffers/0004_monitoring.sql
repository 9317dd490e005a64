-- AGI Staffers monitoring: per-site ingest tokens, raw samples partitioned by day, incremental
-- 1-minute and 1-hour rollups with their watermark, alert rules and states, incidents, and the
-- customer's public status page slug. Replaces 0001's naive monitoring_metrics (one uuid and a
-- numeric(10,2) per sample, one index, no partitions: it could neither take 50,000 rows/s nor be
-- trimmed without a bulk DELETE). It never held production data: no agent could post to it.
DROP TABLE monitoring_metrics;

-- Only the SHA-256 of a site's ingest token is kept: a copy of this table cannot post metrics.
ALTER TABLE customer_sites
    ADD COLUMN ingest_token_hash char(64) CHECK (ingest_token_hash ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX customer_sites_ingest_token_key ON customer_sites (ingest_token_hash);

-- The public status page's address (/status/{slug}): made from the company name once, with a random
-- suffix so that two "Acme" customers never collide and a slug does not enumerate customers.
ALTER TABLE customers ADD COLUMN status_slug varchar(80) CHECK (status_slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$');
CREATE FUNCTION customers_status_slug() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status_slug IS NULL THEN
        NEW.status_slug := concat_ws('-',
            nullif(left(trim(BOTH '-' FROM regexp_replace(lower(coalesce(NEW.company_name, '')), '[^a-z0-9]+', '-', 'g')), 60), ''),
            substr(md5(gen_random_uuid()::text), 1, 8));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_status_slug BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION customers_status_slug();
UPDATE customers SET status_slug = substr(md5(gen_random_uuid()::text), 1, 8) WHERE status_slug IS NULL;
ALTER TABLE customers ALTER COLUMN status_slug SET NOT NULL;
CREATE UNIQUE INDEX customers_status_slug_key ON customers (status_slug);

-- Raw samples, one partition per UTC day (created ahead and dropped by the partition schedule:
-- retention never DELETEs). No FK to customer_sites: checking it would cost every COPYed row, and a
-- deleted site's samples age out with their partitions. No primary key either: a sample is a fact, and
-- a unique index would double the write cost of the hottest table.
CREATE TABLE metric_samples (
    site_id uuid             NOT NULL,
    metric  varchar(64)      NOT NULL,
    at      timestamptz      NOT NULL,
    value   double precision NOT NULL CHECK (value NOT IN ('NaN', 'Infinity', '-Infinity')),
    labels  jsonb
) PARTITION BY RANGE (at);
-- BRIN: rows arrive roughly in time order, so a few pages of summary serve every time-range scan.
CREATE INDEX metric_samples_at_brin ON metric_samples USING brin (at);
-- The per-site, per-metric time-range reads (raw charts, rollups of one site).
CREATE INDEX metric_samples_site_metric_at_idx ON metric_samples (site_id, metric, at);

-- Rollups, each row a bucket of one site's metric; rebuilt whole from the raw samples (never added
-- to), so running a bucket twice or folding a late sample into it gives the same row.
CREATE TABLE metric_rollups_1m (
    site_id uuid             NOT NULL,
    metric  varchar(64)      NOT NULL,
    bucket  timestamptz      NOT NULL,
    count   integer          NOT NULL CHECK (count > 0),
    min     double precision NOT NULL,
    max     double precision NOT NULL,
    sum     double precision NOT NULL,
    p95     double precision NOT NULL,
    PRIMARY KEY (site_id, metric, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX metric_rollups_1m_bucket_brin ON metric_rollups_1m USING brin (bucket);

CREATE TABLE metric_rollups_1h (LIKE metric_rollups_1m INCLUDING CONSTRAINTS, PRIMARY KEY (site_id, metric, bucket))
    PARTITION BY RANGE (bucket);
CREATE INDEX metric_rollups_1h_bucket_brin ON metric_rollups_1h USING brin (bucket);

-- How far each rollup got: every bucket before ``done_until`` is built (late samples within the
-- skew window are folded in by rebuilding the buckets just before it). One row per rollup; the row
-- lock is what keeps two runs of one rollup from working at once.
CREATE TABLE rollup_watermarks (
    name       varchar(20) PRIMARY KEY CHECK (name IN ('1m', '1h')),
    done_until timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Alert rules: for one site, or the default of every site on a plan (a site's own rule for a metric
-- replaces its plan's).
CREATE TABLE alert_rules (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    site_id                 uuid         REFERENCES customer_sites (id) ON DELETE CASCADE,
    plan                    varchar(100) REFERENCES plans (name) ON UPDATE CASCADE ON DELETE CASCADE,
    metric                  varchar(64)  NOT NULL,
    comparison              varchar(2)   NOT NULL CHECK (comparison IN ('>', '>=', '<', '<=')),
    threshold               double precision NOT NULL CHECK (threshold NOT IN ('NaN', 'Infinity', '-Infinity')),
    for_seconds             integer      NOT NULL DEFAULT 0 CHECK (for_seconds BETWEEN 0 AND 86400),
    keep_firing_for_seconds integer      NOT NULL DEFAULT 0 CHECK (keep_firing_for_seconds BETWEEN 0 AND 86400),
    created_at              timestamptz  NOT NULL DEFAULT now(),
    CHECK ((site_id IS NULL) <> (plan IS NULL))
);
CREATE UNIQUE INDEX alert_rules_site_metric_key ON alert_rules (site_id, metric, comparison) WHERE site_id IS NOT NULL;
CREATE UNIQUE INDEX alert_rules_plan_metric_key ON alert_rules (plan, metric, comparison) WHERE plan IS NOT NULL;
INSERT INTO alert_rules (plan, metric, comparison, threshold, for_seconds, keep_firing_for_seconds)
SELECT name, metric, '>', threshold, 120, 120
FROM plans, (VALUES ('cpu_percent', 90.0), ('memory_percent', 90.0), ('disk_percent', 90.0),
                    ('error_rate_percent', 5.0)) AS defaults (metric, threshold);

-- The one alert of a (rule, site): its current state. Its history is its incidents.
CREATE TABLE alerts (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id        uuid        NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    site_id        uuid        NOT NULL REFERENCES customer_sites (id) ON DELETE CASCADE,
    state          varchar(10) NOT NULL DEFAULT 'inactive'
                   CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
    value          double precision,
    pending_since  timestamptz,
    last_breach_at timestamptz,
    incident_id    uuid,
    evaluated_at   timestamptz,
    UNIQUE (rule_id, site_id)
);
CREATE INDEX alerts_site_idx ON alerts (site_id);

-- An incident per firing (when it fired, when it resolved, its peak) or per downtime; staff acknowledge.
CREATE TABLE incidents (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    site_id         uuid        NOT NULL REFERENCES customer_sites (id) ON DELETE CASCADE,
    alert_id        uuid        REFERENCES alerts (id) ON DELETE SET NULL,
    kind            varchar(10) NOT NULL CHECK (kind IN ('alert', 'downtime')),
    title           varchar(200) NOT NULL,
    opened_at       timestamptz NOT NULL,
    resolved_at     timestamptz CHECK (resolved_at >= opened_at),
    peak            double precision,
    acknowledged_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    acknowledged_at timestamptz,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL) OR acknowledged_by IS NULL)
);
CREATE INDEX incidents_site_opened_idx ON incidents (site_id, opened_at DESC);
ALTER TABLE alerts ADD CONSTRAINT alerts_incident_fkey FOREIGN KEY (incident_id) REFERENCES incidents (id) ON DELETE SET NULL;
CREATE INDEX alerts_incident_idx ON alerts (incident_id);
CREATE INDEX incidents_alert_idx ON incidents (alert_id);
CREATE INDEX incidents_acknowledged_by_idx ON incidents (acknowledged_by);

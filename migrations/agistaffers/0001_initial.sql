-- AGI Staffers: customers, their sites and the sites' monitoring metrics (the seed's schema,
-- made production-grade).

CREATE TABLE customers (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        varchar(255) NOT NULL CHECK (email = lower(email) AND email LIKE '_%@_%'),
    company_name varchar(255),
    plan         varchar(100) NOT NULL CHECK (plan IN ('starter', 'business', 'enterprise')),
    status       varchar(50)  NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'active', 'suspended', 'cancelled')),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_key ON customers (email);

CREATE TABLE customer_sites (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: a customer with live sites is suspended or cancelled, not deleted; sites go first.
    customer_id  uuid         NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    domain       varchar(253) NOT NULL
                 CHECK (domain = lower(domain) AND domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$'),
    container_id varchar(255),
    status       varchar(50)  NOT NULL DEFAULT 'provisioning'
                 CHECK (status IN ('provisioning', 'active', 'suspended', 'failed', 'deleted')),
    metrics      jsonb        NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customer_sites_domain_key ON customer_sites (domain);
CREATE INDEX customer_sites_customer_id_idx ON customer_sites (customer_id);

CREATE TABLE monitoring_metrics (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- CASCADE: metrics are owned by their site and have no use without it.
    site_id     uuid          NOT NULL REFERENCES customer_sites (id) ON DELETE CASCADE,
    metric_type varchar(100)  NOT NULL CHECK (metric_type ~ '^[a-z][a-z0-9_.]*$'),
    value       numeric(10,2) NOT NULL,
    "timestamp" timestamptz   NOT NULL DEFAULT now()
);
-- Serves the per-site, per-type time-range reads (dashboards, alerts, rollups) and the FK.
CREATE INDEX monitoring_metrics_site_type_time_idx ON monitoring_metrics (site_id, metric_type, "timestamp" DESC);

-- The application's own reads, run against a restored copy by the restore drill
-- (functions/platform/backups/restore.py): each must run without error.

-- The staff listing: customers newest first with their plan's limits and live sites.
SELECT c.id, c.email, p.max_sites, count(s.id) FILTER (WHERE s.status <> 'deleted') AS sites
  FROM customers c JOIN plans p ON p.name = c.plan LEFT JOIN customer_sites s ON s.customer_id = c.id
 GROUP BY c.id, p.max_sites ORDER BY c.created_at DESC, c.id DESC LIMIT 20;

-- A customer's team and open invitations.
SELECT u.customer_id, count(*) FROM users u GROUP BY u.customer_id LIMIT 10;
SELECT customer_id, email FROM invitations WHERE accepted_at IS NULL AND revoked_at IS NULL LIMIT 10;

-- A site's latest metrics and its rollups (dashboards, status page).
SELECT site_id, metric, max(at) FROM metric_samples GROUP BY site_id, metric LIMIT 10;
SELECT site_id, metric, max(bucket) FROM metric_rollups_1h GROUP BY site_id, metric LIMIT 10;
SELECT site_id, state FROM alerts WHERE state IN ('pending', 'firing') LIMIT 10;

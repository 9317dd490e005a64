-- The (site, metric, at) B-tree moves from the parent (every partition, today's included) to each
-- closed day's partition, built there by the hourly partition maintenance (services/partitions.py:
-- index_closed_days). Today's partition, where every sample is COPYed, keeps BRIN alone: the B-tree
-- halved COPY's rate and nothing reads today's samples by site. Dropping the parent's index drops
-- its partitions' copies; the maintenance builds the closed days' again, newest first.
DROP INDEX IF EXISTS metric_samples_site_metric_at_idx;

"""Which rows make up one AGI Staffers customer, for an isolated restore from a backup.

The seed's 10-minute objective for restoring one customer's data without touching anyone else's:
the platform restores the dump into a scratch database and copies these rows, in this order
(parents first), into the live one in a single transaction (functions/platform/backups/subset.py).
Plans are not restored: they are shared reference data, and a customer's plan must still exist.
"""

from __future__ import annotations

from functions.platform.backups.subset import RowSet

DATABASE = "agistaffers"
_OF_ITS_SITES = "site_id IN (SELECT id FROM customer_sites WHERE customer_id = %(customer_id)s)"
CUSTOMER_ROWS = (
    RowSet("customers", "id = %(customer_id)s"),
    RowSet("users", "customer_id = %(customer_id)s"),
    RowSet("customer_sites", "customer_id = %(customer_id)s"),
    RowSet("invitations", "customer_id = %(customer_id)s"),
    # The customer's own alert rules; alert states and incidents are not restored: they refer to each
    # other (no insert order satisfies both keys) and the next evaluation rebuilds the states.
    RowSet("alert_rules", _OF_ITS_SITES),
    # Metrics go into the live database's partitions: recent ones restore, samples older than the
    # partitions kept there (the plan's retention) are refused with the rest, in one transaction.
    RowSet("metric_samples", _OF_ITS_SITES),
    RowSet("metric_rollups_1m", _OF_ITS_SITES),
    RowSet("metric_rollups_1h", _OF_ITS_SITES),
    # The status page's daily uptime, derived from the hourly rollups restored with it.
    RowSet("site_uptime_daily", _OF_ITS_SITES),
)

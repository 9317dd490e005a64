"""Which rows make up one AGI Staffers customer, for an isolated restore from a backup.

The seed's 10-minute objective for restoring one customer's data without touching anyone else's:
the platform restores the dump into a scratch database and copies these rows, in this order
(parents first), into the live one in a single transaction (functions/platform/backups/subset.py).
Plans are not restored: they are shared reference data, and a customer's plan must still exist.
"""

from __future__ import annotations

from functions.platform.backups.subset import RowSet

DATABASE = "agistaffers"
CUSTOMER_ROWS = (
    RowSet("customers", "id = %(customer_id)s"),
    RowSet("users", "customer_id = %(customer_id)s"),
    RowSet("customer_sites", "customer_id = %(customer_id)s"),
    RowSet("invitations", "customer_id = %(customer_id)s"),
    RowSet("monitoring_metrics", "site_id IN (SELECT id FROM customer_sites WHERE customer_id = %(customer_id)s)"),
)

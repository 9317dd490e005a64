"""Database backups that are proven by restoring them.

- ``tools``: the pg_dump/pg_restore matching the server (an older pg_dump is refused loudly)
- ``dump``: pg_dump in custom format streamed to the bucket, statistics from the same snapshot
- ``manifest``: what each dump holds (versions, size, SHA-256, tables, row counts, sampled checksums)
- ``store``: the backup bucket (multipart, conditional writes, Object Lock, never a delete)
- ``restore``: fetch and check, restore into a new database, verify; swap a verified copy into place
- ``drill``: the daily restore drill, its recorded RTO/RPO and the freshness alert
- ``subset``: copy chosen rows (one customer's) from a restored copy into the live database
- ``routes``: the schedules (a Chalice blueprint), ``composition``: the container they use

Why the 15-minute RPO is a frequent full dump, locally. The seed asks for an incremental every 15
minutes. A logical dump cannot be differential (pg_dump has no "since"); rows changed since the last
dump could be found only through an ``updated_at`` on every table and a record of every delete,
which the schema does not have. The physical ways need control of the server: WAL archiving needs
``archive_command`` (a server setting the functions do not own on a DATABASE_URL), and PostgreSQL
17's incremental ``pg_basebackup`` needs ``summarize_wal`` and a physical restore, neither available
on the machines' PostgreSQL 15. So the ``incremental`` kind is a full, consistent custom-format dump
every 15 minutes, kept 3 days: at the databases' present sizes it takes seconds (benchmarks/
backup_restore.py measures it), and its restore path is the daily one, drilled every day. In
production the RPO comes from the managed database's point-in-time recovery (WAL, 5 minutes), and
these dumps remain the logical, cross-version, per-customer-restorable copies.
"""

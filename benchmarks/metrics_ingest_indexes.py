"""What the indexes of today's ``metric_samples`` partition cost COPY, against ``executemany``, in the
ingest benchmark's own layout (``benchmarks/metrics_ingest.py``: one site's samples per 5,000-row batch).

    python -m benchmarks.metrics_ingest_indexes

The record of why today's partition, where every accepted sample lands, has BRIN alone and gets its
(site, metric, at) B-tree only once the day has closed (services/partitions.py). In one run, on one
database, in this order:
- ``btree``: the B-tree built on today's partition too (the layout before migration 0008);
- ``brin_only``: that B-tree dropped again (the schema as it is);
- ``no_index``: the BRIN dropped too (the ceiling; the rollups' time-range reads need the BRIN).
Each variant's rounds run COPY and the baseline (plain ``executemany`` of rows of the same shape, in
the same batches and transactions; synchronous commit on for both) interleaved batch by batch; the
ratio per round is robust to the load of the moment. JSON line last: each variant's median ratio.
"""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime

import psycopg

from benchmarks._common import environment, spread
from benchmarks.metrics_ingest import _rows, _sites, bench_copy_and_executemany, hot_windows
from functions.agistaffers.composition import configure
from functions.agistaffers.services import partitions

COPY_ROWS = 100_000
EXECUTEMANY_ROWS = 50_000
ROUNDS = 5
BTREE = "metric_samples_today_site_metric_at_idx"
# (name, statement run before its rounds)
VARIANTS = (
    ("btree", "CREATE INDEX {btree} ON {today} (site_id, metric, at)"),
    ("brin_only", "DROP INDEX {btree}"),
    ("no_index", "DROP INDEX metric_samples_at_brin"),
)


def main() -> None:
    random.seed(7)
    figures: dict[str, float] = {}
    with environment() as env:
        container = configure(env.settings)
        url = env.settings.database_url_for("agistaffers")
        container.maintain_partitions()
        with psycopg.connect(url) as conn:
            sites = _sites(conn, 1000)
        windows = hot_windows()
        today = partitions.partition_name("metric_samples", datetime.now(UTC).date())
        for name, statement in VARIANTS:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(statement.format(btree=BTREE, today=today))
            copy_rates, exec_rates = [], []
            for _ in range(ROUNDS):
                copy_rate, exec_rate = bench_copy_and_executemany(
                    url, _rows(sites, COPY_ROWS, next(windows)), _rows(sites, EXECUTEMANY_ROWS, next(windows))
                )
                copy_rates.append(copy_rate)
                exec_rates.append(exec_rate)
            ratios = [copy / baseline for copy, baseline in zip(copy_rates, exec_rates, strict=True)]
            print(f"{name}: COPY rows/s {spread(copy_rates)}")
            print(f"{name}: executemany rows/s {spread(exec_rates)}")
            print(f"{name}: COPY / executemany per round {spread(ratios)}")
            figures[f"copy_vs_executemany_{name}"] = round(statistics.median(ratios), 2)
            figures[f"copy_rows_per_s_{name}"] = round(statistics.median(copy_rates))
        container.close()
    print(json.dumps({"benchmark": "metrics_ingest_indexes", **figures}))


if __name__ == "__main__":
    main()

"""What the indexes of ``metric_samples`` cost COPY, against ``executemany``, in the ingest
benchmark's own layout (``benchmarks/metrics_ingest.py``: one site's samples per 5,000-row batch).

    python -m benchmarks.metrics_ingest_indexes

The record of why the samples table keeps its (site, metric, at) B-tree on every partition: the
alternative (BRIN only on today's partition, the B-tree built once a day has closed) is measured by
its hot partition, where every accepted sample lands. In one run, on one database, in this order:
- ``both``: the schema as it is (B-tree (site_id, metric, at) + BRIN (at));
- ``brin_only``: the B-tree dropped (the proposed hot partition);
- ``no_index``: the BRIN dropped too (the ceiling; the rollups' time-range reads need the BRIN).
Each variant's rounds run COPY then the baseline (plain ``executemany`` of the same rows, in the same
batches and transactions; synchronous commit on for both) back to back; the ratio per round is
robust to the load of the moment. JSON line last: each variant's median ratio.
"""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks._common import environment, spread
from benchmarks.metrics_ingest import _rows, _sites, bench_copy, bench_executemany
from functions.agistaffers.composition import configure

COPY_ROWS = 100_000
EXECUTEMANY_ROWS = 50_000
ROUNDS = 5
# Each variant drops one more index than the one before it.
VARIANTS = (
    ("both", None),
    ("brin_only", "metric_samples_site_metric_at_idx"),
    ("no_index", "metric_samples_at_brin"),
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
        at = datetime.now(UTC) - timedelta(minutes=5)
        for name, dropped in VARIANTS:
            if dropped:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"DROP INDEX {dropped}")
            copy_rates, exec_rates = [], []
            for _ in range(ROUNDS):
                copy_rates.append(bench_copy(url, _rows(sites, COPY_ROWS, at)))
                exec_rates.append(bench_executemany(url, _rows(sites, EXECUTEMANY_ROWS, at)))
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

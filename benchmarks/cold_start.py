"""What a Lambda cold start pays to import each product's app, against ``import boto3``.

Each sample is a fresh interpreter timing one import with ``time.perf_counter`` around it, so
nothing is cached in ``sys.modules``; the file system cache and the bytecode are warm after a first
untimed run, as on a Lambda host that has run the function before. Runs are
interleaved (boto3, stepperslife, agistaffers, boto3, ...) so that drift hits all three alike.

The baseline is ``import boto3``: the import every Python Lambda that talks to AWS pays. The app's
import (Chalice, the blueprints, psycopg, pydantic schemas...) is the part of a cold start that SnapStart
removes: Lambda runs the init once when a version is published and restores the initialized memory
from a snapshot instead. What SnapStart costs instead, the restore of that snapshot (AWS quotes
low hundreds of milliseconds, growing with the memory touched) and the after-restore hooks (which
only drop connections: functions/platform/snapstart.py), cannot be measured off Lambda: this script
says so rather than guessing a number.

    python -m benchmarks.cold_start [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks._common import spread

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "boto3"
APP_MODULES = {"stepperslife": "functions.stepperslife.app", "agistaffers": "functions.agistaffers.app"}
# The child prints the import's wall time in seconds; nothing else runs before it but the interpreter.
_CHILD = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    """The wall time of ``import module`` in a fresh interpreter started from the repository root."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD.format(module=module)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per module (default 15)")
    args = parser.parse_args()
    modules = {BASELINE: BASELINE, **APP_MODULES}
    for module in modules.values():
        import_seconds(module)  # warm the file system cache and the bytecode once, for every contender
    samples: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(args.runs):
        for name, module in modules.items():
            samples[name].append(import_seconds(module))

    baseline = statistics.median(samples[BASELINE])
    figures: dict[str, object] = {"runs": args.runs, "python": sys.version.split()[0]}
    print(f"import time in a fresh interpreter, seconds ({args.runs} runs each, interleaved):")
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = median / baseline
        print(f"  {name:<13} {spread(values)}  ratio vs import boto3: {ratio:.2f}x")
        figures[f"{name}_import_s_median"] = round(median, 4)
        figures[f"{name}_import_s_stdev"] = round(statistics.pstdev(values), 4)
        if name != BASELINE:
            figures[f"{name}_vs_boto3"] = round(ratio, 2)
    print(
        "SnapStart would remove the import and init above from every cold start (Lambda restores the "
        "initialized memory instead); the restore itself and the after-restore hooks can only be "
        "measured on Lambda, not here."
    )
    figures["snapstart_removes_s"] = {name: figures[f"{name}_import_s_median"] for name in APP_MODULES}
    figures["snapstart_restore_s"] = None
    print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()

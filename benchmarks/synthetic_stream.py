"""Benchmark of :func:`migpt_traj.datasets.synthetic.stream_synthetic` (shard-by-shard MEDS writer).

Times 10^4 and 10^5 subjects by default (``--sizes 10000 100000 1000000`` for the 10^6 target), prints a table
and writes ``benchmarks/results/synthetic_stream.json`` with the machine description. Each size runs in a fresh
subprocess so that its peak resident memory is its own.

Usage:
    .venv/bin/python benchmarks/synthetic_stream.py [--sizes 10000 100000] [--out benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_stream.json"

_CHILD = """
import json, resource, shutil, sys, time
from pathlib import Path
from migpt_traj.datasets.synthetic import stream_synthetic
n, root = int(sys.argv[1]), Path(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
stream_synthetic(n, root, seed=0)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
files = list(root.rglob("*.parquet"))
print(json.dumps({
    "n_subjects": n,
    "wall_s": wall,
    "cpu_s": cpu,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "shards": len(list((root / "data").glob("*.parquet"))),
    "disk_mib": sum(f.stat().st_size for f in files) / 2**20,
}))
shutil.rmtree(root)
"""


def _machine() -> dict[str, object]:
    import numpy as np
    import polars as pl

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "polars": pl.__version__,
        "load_average_at_start": load,
    }


def run(sizes: list[int], out: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(n), str(Path(tmp) / f"root_{n}")],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["subjects_per_s"] = row["n_subjects"] / row["wall_s"]
            rows.append(row)
            print(
                f"{row['n_subjects']:>10,d} subjects  {row['wall_s']:8.1f} s wall  {row['cpu_s']:8.1f} s cpu  "
                f"{row['peak_rss_mib']:8.0f} MiB peak  {row['shards']:3d} shards  {row['disk_mib']:8.0f} MiB disk  "
                f"{row['subjects_per_s']:10,.0f} subjects/s",
                flush=True,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": _machine(), "results": rows}, indent=2))
    print(f"wrote {out}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.sizes, args.out)


if __name__ == "__main__":
    main()

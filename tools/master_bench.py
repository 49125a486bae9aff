#!/usr/bin/env python3
"""Loads a scrip master with pandas.read_csv, for comparison with the relay's
loader. benches/instruments.rs runs it on the same generated 290,000-row file
in the same run and prints both figures; it also runs on its own:

    pip install pandas
    python3 tools/master_bench.py FILE [RUNS]

Prints one JSON line: pandas version, rows, min and median seconds of
wall-clock time, and min CPU seconds (process time: the same work on a busy
machine).
"""
import json
import statistics
import sys
import time


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    import pandas as pd

    times = []
    cpu = []
    rows = 0
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        df = pd.read_csv(path, low_memory=False)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        rows = len(df)
    print(json.dumps({
        "pandas": pd.__version__,
        "rows": rows,
        "runs": runs,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "min_cpu_s": min(cpu),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

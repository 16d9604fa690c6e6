"""Wall time, rows/s and peak memory of `socialads score` on a large file.

Writes ``--rows`` random valid users (plus a User ID) as CSV in chunks, then runs the real
command in a child process on the embedded default of ``--home`` (which must hold a
champion: run `socialads train` there first) and reports the child's peak RSS
(``getrusage(RUSAGE_CHILDREN)``). The prediction log is written as in production unless
``--no-log``.

Example::

    SOCIALADS_HOME=/tmp/bench-home socialads train
    python benchmarks/score_file.py --home /tmp/bench-home --rows 5000000
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_users(path: Path, rows: int, chunk: int = 500_000, seed: int = 0) -> None:
    """``rows`` random valid users within the declared bounds, as CSV."""
    import numpy as np
    import pandas as pd

    from socialads.data.schema import AGE, BOUNDS, GENDERS, SALARY

    rng = np.random.default_rng(seed)
    written = 0
    with path.open("w") as out:
        while written < rows:
            n = min(chunk, rows - written)
            frame = pd.DataFrame(
                {
                    "User ID": np.arange(written, written + n) + 15_000_000,
                    "Gender": np.asarray(GENDERS)[rng.integers(0, len(GENDERS), n)],
                    AGE: rng.integers(int(BOUNDS[AGE].minimum), 70, n),
                    SALARY: rng.integers(15_000, 150_001, n),
                }
            )
            frame.to_csv(out, header=written == 0, index=False)
            written += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="SOCIALADS_HOME holding a champion")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, help="SOCIALADS_SCORE_CHUNK_ROWS")
    parser.add_argument("--no-log", action="store_true", help="SOCIALADS_PREDICTION_LOG=false")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="socialads-score-bench-") as tmp:
        source, target = Path(tmp) / "users.csv", Path(tmp) / "scores.parquet"
        started = time.perf_counter()
        write_users(source, args.rows)
        made = time.perf_counter() - started
        env = dict(os.environ, SOCIALADS_HOME=args.home)
        if args.chunk_rows:
            env["SOCIALADS_SCORE_CHUNK_ROWS"] = str(args.chunk_rows)
        if args.no_log:
            env["SOCIALADS_PREDICTION_LOG"] = "false"
        command = [sys.executable, "-m", "socialads", "score", "-i", str(source), "-o", str(target)]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--json"], env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"socialads score failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "input_mib": round(source.stat().st_size / 2**20, 1),
                    "output_mib": round(target.stat().st_size / 2**20, 1),
                    "csv_written_s": round(made, 1),
                    "command_wall_s": round(wall, 1),
                    "scoring_s": summary["seconds"],
                    "rows_per_s": round(args.rows / summary["seconds"]),
                    "peak_rss_mib": round(peak_mib),
                    "logged": summary["logged"] and not args.no_log,
                    "model_version": summary["model_version"],
                }
            )
        )


if __name__ == "__main__":
    main()

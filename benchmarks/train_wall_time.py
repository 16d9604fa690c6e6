"""Wall time of `socialads train` (first and warm run), `socialads predict`, the bare search,
and the start-up costs of the dependencies, side by side on this machine.

    python benchmarks/train_wall_time.py [--repeat 3]

Runs everything in a temporary SOCIALADS_HOME (embedded default) and stops the local Prefect
server it started at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds one command takes; fails loudly if it fails."""
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the warm measurements")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "socialads"]
    with tempfile.TemporaryDirectory() as home:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_"))
        }
        env |= {"SOCIALADS_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        rows: list[tuple[str, list[float]]] = []
        rows.append(
            (
                "import prefect",
                [timed([sys.executable, "-c", "import prefect"], env) for _ in range(args.repeat)],
            )
        )
        rows.append(
            (
                "import mlflow",
                [timed([sys.executable, "-c", "import mlflow"], env) for _ in range(args.repeat)],
            )
        )
        rows.append(
            (
                "import sklearn+pandas",
                [
                    timed([sys.executable, "-c", "import pandas, sklearn.model_selection"], env)
                    for _ in range(args.repeat)
                ],
            )
        )
        rows.append(
            (
                "bare search (no Prefect, no MLflow)",
                [
                    timed([sys.executable, str(HERE / "bare_search.py")], env)
                    for _ in range(args.repeat)
                ],
            )
        )
        rows.append(("socialads train, first run (starts Prefect)", [timed([*cli, "train"], env)]))
        rows.append(
            ("socialads train, warm", [timed([*cli, "train"], env) for _ in range(args.repeat)])
        )
        predict = [*cli, "predict", "--gender", "Female", "--age", "45", "--salary", "90000"]
        rows.append(("socialads predict (first, fills cache)", [timed(predict, env)]))
        rows.append(("socialads predict, warm", [timed(predict, env) for _ in range(args.repeat)]))
        subprocess.run([*cli, "local", "stop"], env=env, capture_output=True, check=False)
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  median s   runs")
    for name, values in rows:
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<{width}}  {statistics.median(values):8.1f}   [{runs}]")
    bare = statistics.median(rows[3][1])
    warm = statistics.median(rows[5][1])
    print(f"\nwarm train / bare search = {warm / bare:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()

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
BARE = "bare search (no Prefect, no MLflow)"
WARM = "socialads train, warm"


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    """Seconds one command takes; fails loudly if it fails."""
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
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
    predict = [*cli, "predict", "--gender", "Female", "--age", "45", "--salary", "90000"]
    tools = ("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_", "DATA_REPO_", "PROMETHEUS_")
    # (name, command, runs); run in the temporary home so no .env of the caller's folder applies
    plan = [
        ("import prefect", [sys.executable, "-c", "import prefect"], args.repeat),
        ("import mlflow", [sys.executable, "-c", "import mlflow"], args.repeat),
        (
            "import sklearn+pandas",
            [sys.executable, "-c", "import pandas, sklearn.model_selection"],
            args.repeat,
        ),
        (BARE, [sys.executable, str(HERE / "bare_search.py")], args.repeat),
        ("socialads train, first run (starts Prefect)", [*cli, "train"], 1),
        (WARM, [*cli, "train"], args.repeat),
        ("socialads predict (first, fills cache)", predict, 1),
        ("socialads predict, warm", predict, args.repeat),
    ]
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(tools)}
        env |= {"SOCIALADS_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        try:
            rows = {name: [timed(cmd, env, home) for _ in range(n)] for name, cmd, n in plan}
        finally:
            stop = [*cli, "local", "stop"]
            subprocess.run(stop, env=env, cwd=home, capture_output=True, check=False)
    width = max(len(name) for name in rows)
    print(f"{'what':<{width}}  median s   runs")
    for name, values in rows.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<{width}}  {statistics.median(values):8.1f}   [{runs}]")
    ratio = statistics.median(rows[WARM]) / statistics.median(rows[BARE])
    print(f"\nwarm train / bare search = {ratio:.2f}x (target <= 1.5x on an idle machine)")


if __name__ == "__main__":
    main()

"""Wall time of `socialads predict`: the first call after `socialads train`, and warm calls.

In a temporary SOCIALADS_HOME (embedded default: local lake, SQLite MLflow store, local
Prefect server), ``--runs`` times: train (``--candidates``), then time the first
``socialads predict``; then time ``--runs`` more calls. Prints every time and the medians.
Each call is a fresh process, as a person or a script runs it.

Example::

    python benchmarks/predict_oneoff.py --candidates logistic_regression --runs 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "socialads"]
PREDICT = ["predict", "--gender", "Female", "--age", "45", "--salary", "90000"]
TOOL_PREFIXES = ("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_", "DATA_REPO_")


def run(env: dict[str, str], cwd: Path, *args: str) -> tuple[float, str]:
    """Run the CLI; (wall seconds, stdout). Exits on failure."""
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"socialads {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default="logistic_regression")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="socialads-oneoff-") as tmp:
        home, cwd = Path(tmp) / "home", Path(tmp)  # cwd without a .env
        env = {k: v for k, v in os.environ.items() if not k.startswith(TOOL_PREFIXES)}
        env |= {
            "SOCIALADS_HOME": str(home),
            "SOCIALADS_CANDIDATES": args.candidates,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        first: list[float] = []
        try:
            for i in range(args.runs):
                trained, _ = run(env, cwd, "train")
                seconds, out = run(env, cwd, *PREDICT)
                first.append(seconds)
                answer = json.loads(out)
                print(
                    f"train {i + 1}: {trained:5.1f} s; first predict {seconds:.2f} s "
                    f"(version {answer['model_version']})",
                    flush=True,
                )
            warm = []
            for i in range(args.runs):
                seconds, _ = run(env, cwd, *PREDICT)
                warm.append(seconds)
                print(f"warm predict {i + 1}: {seconds:.2f} s", flush=True)
        finally:
            subprocess.run(
                [*CLI, "local", "stop"], env=env, cwd=cwd, capture_output=True, check=False
            )
    print(
        f"\nsocialads predict ({args.candidates} champion), {args.runs} runs each: "
        f"first call after train median {statistics.median(first):.2f} s "
        f"(max {max(first):.2f}), warm median {statistics.median(warm):.2f} s "
        f"(max {max(warm):.2f})"
    )


if __name__ == "__main__":
    main()

"""How `socialads train` grows with the data: wall time and peak RSS at 10 k, 100 k and 1 M
synthetic rows (`socialads data synth`), one row per size and mode, and the slope per 10×.

    python benchmarks/scale.py [--rows 10000,100000,1000000] [--modes 'local,dask local']
                               [--candidates ...]

Each run is the real command line in a subprocess, in a temporary SOCIALADS_HOME (embedded
default), training on a synthetic Parquet dataset through SOCIALADS_RAW_DATASET. A warm-up
train on the bundled CSV starts the local Prefect server first, so no run pays for (or
counts the memory of) the server. Peak RSS is the largest sum of the RSS of the train
process and all its children, polled every 50 ms. A mode is a name and the extra options
of `socialads train` (see MODES); add one there to get a column of it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "socialads"]
TOOLS = ("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_", "DATA_REPO_", "PROMETHEUS_")
MODES: dict[str, list[str]] = {
    "local": [],
    "dask local": ["--dask", "local"],  # DaskTaskRunner + joblib on 2 worker processes
}
"""Mode name → extra options of `socialads train`."""
POLL_SECONDS = 0.05


@dataclass
class Measured:
    """One `socialads train` run."""

    rows: int
    mode: str
    seconds: float
    peak_rss: int
    search_seconds: float
    slowest: str


def tree_rss(process: psutil.Process) -> int:
    """RSS of ``process`` and all its descendants (those that vanish meanwhile count 0)."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def measure(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    """Wall seconds, peak RSS of the process tree, and stdout of one command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.NoSuchProcess:
                break
            time.sleep(POLL_SECONDS)
        child.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err.read()[-3000:]}")
        return seconds, peak, out.read()


def synth(rows: int, folder: Path, env: dict[str, str], cwd: str) -> None:
    """Write the synthetic dataset of ``rows`` rows to ``folder`` (not measured)."""
    cmd = [*CLI, "data", "synth", "--rows", str(rows), "--output", str(folder), "--seed", "7"]
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)


def run(rows_list: list[int], modes: list[str], candidates: str | None) -> list[Measured]:
    """Measure every size in every mode."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(TOOLS)}
        env |= {"SOCIALADS_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if candidates:
            env["SOCIALADS_CANDIDATES"] = candidates
        try:
            warm = env | {"SOCIALADS_CANDIDATES": "gaussian_nb"}
            measure([*CLI, "train", "--quiet"], warm, tmp)  # starts the Prefect server
            for rows in rows_list:
                data = Path(tmp) / f"synth-{rows}"
                synth(rows, data, env, tmp)
                for mode in modes:
                    cmd = [*CLI, "train", "--json", *MODES[mode]]
                    seconds, peak, out = measure(
                        cmd, env | {"SOCIALADS_RAW_DATASET": str(data)}, tmp
                    )
                    board = json.loads(out)["train"]["leaderboard"]
                    slowest = max(board, key=lambda r: r["seconds"])
                    results.append(
                        Measured(
                            rows=rows,
                            mode=mode,
                            seconds=seconds,
                            peak_rss=peak,
                            search_seconds=sum(r["seconds"] for r in board),
                            slowest=f"{slowest['candidate']} {slowest['seconds']:.0f} s",
                        )
                    )
                    print(table([results[-1]], header=not results[:-1]), flush=True)
        finally:
            stop = [*CLI, "local", "stop"]
            subprocess.run(stop, env=env, cwd=tmp, capture_output=True, check=False)
    return results


def table(results: list[Measured], *, header: bool = True) -> str:
    """The measurements as aligned text rows."""
    lines = []
    if header:
        lines.append(
            f"{'rows':>10}  {'mode':<12} {'wall s':>8} {'peak RSS MB':>12} "
            f"{'search s':>9}  slowest candidate"
        )
    for m in results:
        lines.append(
            f"{m.rows:>10,}  {m.mode:<12} {m.seconds:>8.1f} {m.peak_rss / 2**20:>12.0f} "
            f"{m.search_seconds:>9.1f}  {m.slowest}"
        )
    return "\n".join(lines)


def slopes(results: list[Measured]) -> str:
    """Per mode, how wall time and peak RSS grow from one size to the next, per 10× rows
    (the ratio, and the exponent b of cost ∝ rows^b)."""
    lines = []
    for mode in dict.fromkeys(m.mode for m in results):
        ordered = sorted((m for m in results if m.mode == mode), key=lambda m: m.rows)
        for small, large in itertools.pairwise(ordered):
            decades = math.log10(large.rows / small.rows)
            parts = []
            for name, a, b in (
                ("wall", small.seconds, large.seconds),
                ("peak RSS", small.peak_rss, large.peak_rss),
            ):
                exponent = math.log10(b / a) / decades
                parts.append(f"{name} x{10**exponent:.2f} per 10x (rows^{exponent:.2f})")
            lines.append(f"{mode}: {small.rows:,} -> {large.rows:,}: " + ", ".join(parts))
    return "\n".join(lines)


def main() -> None:
    """Measure and print the table and the slopes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated sizes")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    parser.add_argument("--candidates", help="SOCIALADS_CANDIDATES for the runs (default all)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.rows.split(",") if part.strip()]
    modes = [part.strip() for part in args.modes.split(",") if part.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    results = run(sizes, modes, args.candidates)
    print()
    print(slopes(results))


if __name__ == "__main__":
    main()

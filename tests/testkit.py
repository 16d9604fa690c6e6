"""What several test modules need: a clean environment, the CLI, the env file.

tests/ is on ``sys.path`` (pytest puts the folder of the root conftest.py there), so any
test module can ``from testkit import ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TOOL_PREFIXES = ("SOCIALADS_", "MLFLOW_", "PREFECT_", "AWS_", "MINIO_", "DATA_REPO_", "PROMETHEUS_")
CLI = [sys.executable, "-m", "socialads"]
DEPLOYMENTS = (
    "pipeline/socialads",
    "data-prep/socialads",
    "train/socialads",
    "score/socialads",
    "monitor/socialads",
)
"""What `socialads deploy` registers (the stack and compose tests look for each)."""


def environ_without_tools() -> dict[str, str]:
    """``os.environ`` without any variable of socialads, MLflow, Prefect, S3 or Prometheus."""
    return {k: v for k, v in os.environ.items() if not k.startswith(TOOL_PREFIXES)}


@dataclass
class Ran:
    """A finished CLI call and how long it took."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"socialads {' '.join(self.args)} -> {self.returncode} in {self.seconds:.1f}s\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}"
        )

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_cli(cwd: Path, env: dict[str, str], *args: str, timeout: float = 600) -> Ran:
    """Run ``socialads *args`` in ``cwd`` with exactly ``env``."""
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(args, done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def env_file_values(path: Path = ROOT / ".env.example") -> dict[str, str]:
    """KEY=value lines of an env file (comments and blanks skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return values


def traffic(
    raw: bytes,
    rows: int,
    rng: Any,
    *,
    age_shift: float = 0.0,
    salary_factor: float = 1.0,
) -> pd.DataFrame:
    """Users drawn (with replacement) from the bundled dataset ``raw``: Gender, Age,
    EstimatedSalary and their true Purchased. ``age_shift`` years and ``salary_factor`` move
    the population, clipped to the schema's bounds (what the API accepts)."""
    import io

    import pandas as pd

    from socialads.data.schema import AGE, BOUNDS, SALARY
    from socialads.data.validation import validate

    users = validate(pd.read_csv(io.BytesIO(raw), dtype=str))
    picked = users.iloc[rng.integers(0, len(users), rows)].reset_index(drop=True)
    picked[AGE] = (picked[AGE] + age_shift).clip(BOUNDS[AGE].minimum, BOUNDS[AGE].maximum)
    picked[SALARY] = (picked[SALARY] * salary_factor).round().clip(upper=BOUNDS[SALARY].maximum)
    return picked


def publish_processed(lake: Any, raw: bytes, settings: Any) -> tuple[Any, Any, Any]:
    """Data-prep without Prefect, as the data-prep flow's tasks do it: validate ``raw``, split,
    scale and publish a processed run to ``lake``; (train, test, manifest)."""
    from socialads.data.lake import sha256
    from socialads.data.processed import write_processed
    from socialads.data.validation import load_and_validate
    from socialads.features.preprocessing import fit_scaler, split

    frame = load_and_validate(raw)
    train, test = split(frame, settings.test_size, settings.random_state)
    manifest = write_processed(
        lake,
        raw_sha256=sha256(raw),
        raw_rows=len(frame),
        train=train,
        test=test,
        scaler=fit_scaler(train),
        test_size=settings.test_size,
        random_state=settings.random_state,
    )
    return train, test, manifest

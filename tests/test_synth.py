"""`socialads data synth`: synthetic users valid by the project's own schema, distributed like
the bundled dataset, the same for a seed, written as several Parquet parts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from testkit import environ_without_tools, run_cli

from socialads.data.lake import Lake
from socialads.data.schema import AGE, GENDER, SALARY, TARGET
from socialads.data.synth import synthesize
from socialads.data.validation import load_and_validate, validate
from socialads.errors import LakeError

ROWS = 40_000
CHUNK = 15_000


@pytest.fixture(scope="module")
def original(raw_bytes: bytes) -> pd.DataFrame:
    return load_and_validate(raw_bytes)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("synth") / "ads"
    summary = synthesize(Lake(str(folder)), ROWS, seed=3, chunk_rows=CHUNK)
    assert (summary.rows, summary.parts) == (ROWS, 3)
    return folder, pd.read_parquet(folder)


def test_rows_are_valid_by_the_schema_with_the_originals_types(
    written: tuple[Path, pd.DataFrame],
) -> None:
    folder, frame = written
    assert sorted(p.name for p in folder.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert len(frame) == ROWS
    # The validation of raw files (columns, Gender values, bounds, both classes), on the
    # values as text like a CSV: nothing is rejected.
    assert len(validate(frame.astype(str))) == ROWS
    assert frame[AGE].dtype == "int64"
    assert frame[SALARY].dtype == "int64"
    assert (frame[SALARY] % 1000 == 0).all(), "salaries are whole thousands like the original"
    assert frame["User ID"].is_unique


def test_class_balance_and_per_class_means_follow_the_original(
    written: tuple[Path, pd.DataFrame], original: pd.DataFrame
) -> None:
    _, frame = written
    # Tolerances: ~4 standard errors at 40k rows (the share's is 0.0024, a cell mean's about
    # 0.15 years and 700 of salary), plus the copula's slightly thinner tails.
    assert frame[TARGET].mean() == pytest.approx(original[TARGET].mean(), abs=0.01)
    assert frame[GENDER].eq("Male").mean() == pytest.approx(
        original[GENDER].eq("Male").mean(), abs=0.01
    )
    cells = [TARGET, GENDER]
    synthetic = frame.groupby(cells)[[AGE, SALARY]].mean()
    expected = original.groupby(cells)[[AGE, SALARY]].mean()
    assert (synthetic[AGE] - expected[AGE]).abs().max() < 1.0
    assert (synthetic[SALARY] - expected[SALARY]).abs().max() < 3000
    # The Age-salary relation within each class (positive for non-buyers, negative for buyers).
    for purchased in (0, 1):
        rho = frame[frame[TARGET] == purchased][[AGE, SALARY]].corr("spearman").iloc[0, 1]
        want = original[original[TARGET] == purchased][[AGE, SALARY]].corr("spearman").iloc[0, 1]
        assert rho == pytest.approx(want, abs=0.06)


def test_the_same_seed_gives_the_same_files_and_another_seed_others(tmp_path: Path) -> None:
    def parts(name: str, seed: int) -> list[bytes]:
        synthesize(Lake(str(tmp_path / name)), 3000, seed=seed, chunk_rows=1000)
        return [p.read_bytes() for p in sorted((tmp_path / name).iterdir())]

    first = parts("a", seed=11)
    assert len(first) == 3
    assert parts("b", seed=11) == first
    assert parts("c", seed=12) != first


def test_a_folder_with_parts_is_refused(written: tuple[Path, pd.DataFrame]) -> None:
    folder, _ = written
    with pytest.raises(LakeError, match="already holds Parquet files"):
        synthesize(Lake(str(folder)), 10)


def test_the_command_writes_parts_and_prints_a_summary(tmp_path: Path) -> None:
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path / "home")}
    target = (tmp_path / "out").as_uri()
    ran = run_cli(
        tmp_path, env, "data", "synth", "--rows", "2500", "--output", target, "--chunk-rows", "1000"
    )
    assert ran.returncode == 0, ran.describe()
    assert "wrote 2,500 rows in 3 Parquet parts" in ran.stdout
    assert len(pd.read_parquet(tmp_path / "out")) == 2500

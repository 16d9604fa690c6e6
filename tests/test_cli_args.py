"""Nonsense on the command line: a one-line message and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import environ_without_tools, run_cli

NONSENSE = [
    ["frobnicate"],
    ["--bogus"],
    ["train", "--metric", "speed"],
    ["train", "--test-size", "3"],
    ["train", "--cv-folds", "1"],
    ["train", "--candidates", "deep_net"],
    ["train", "unexpected"],
    ["train", "--dask", "scheduler:8786"],
    ["predict"],
    ["predict", "--gender", "Female", "--age", "old", "--salary", "1"],
    ["predict", "--gender", "Female", "--age", "200", "--salary", "1"],
    ["predict", "--gender", "Robot", "--age", "30", "--salary", "1"],
    ["predict", "--gender", "Female", "--age", "30", "--salary", "-5"],
    ["serve", "--port", "http"],
    ["serve", "--port", "70000"],
    ["serve", "--workers", "0"],
    ["serve", "--reload-interval", "0"],
    ["deploy", "--cron", "every day"],
    ["deploy", "--image", "socialads:latest"],
    ["lake", "init", "extra"],
    ["lake", "frobnicate"],
    ["local", "frobnicate"],
    ["score"],
    ["score", "--input", "users.csv"],
    ["score", "-i", "users.csv", "-o", "out.parquet", "--alias", "a", "--model-version", "1"],
    ["score", "-i", "users.txt", "-o", "out.parquet", "--model-version", "1"],
    ["feedback"],
    ["monitor", "--since", "3x"],
    ["monitor", "--since", "2h", "--start", "2026-12-01"],
    ["monitor", "--start", "yesterday"],
    ["monitor", "--start", "2026-12-02", "--end", "2026-12-01"],
]


@pytest.mark.parametrize("args", NONSENSE, ids=lambda a: " ".join(a) or "none")
def test_nonsense_gets_one_line_and_non_zero(tmp_path: Path, args: list[str]) -> None:
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path)}
    result = run_cli(tmp_path, env, *args, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_settings_are_named_at_start(tmp_path: Path) -> None:
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path), "SOCIALADS_TEST_SIZE": "lots"}
    result = run_cli(tmp_path, env, "info", timeout=120)
    assert result.returncode == 2
    assert "SOCIALADS_TEST_SIZE" in result.stderr


def test_candidates_may_have_spaces_after_commas(tmp_path: Path) -> None:
    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path)}
    result = run_cli(tmp_path, env, "train", "--candidates", "knn, no_such_family", timeout=120)
    assert result.returncode == 2
    assert "unknown candidates ['no_such_family']" in result.stderr  # "knn" was accepted


def test_option_help_names_the_setting_and_its_default(tmp_path: Path) -> None:
    from socialads.settings import Settings

    env = environ_without_tools() | {"SOCIALADS_HOME": str(tmp_path), "COLUMNS": "200"}
    result = run_cli(tmp_path, env, "train", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    folds = Settings.model_fields["cv_folds"]
    assert f"(env SOCIALADS_CV_FOLDS, default {folds.default})" in result.stdout
    assert f"[{folds.metadata[0].ge}<=x<={folds.metadata[1].le}]" in result.stdout

"""Settings: canonical names, the tools' standard variables and the original .env names."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from socialads.settings import CANDIDATE_NAMES, Settings


def test_defaults_are_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALADS_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.test_size == 0.2
    assert settings.random_state == 42
    assert settings.lake == (tmp_path / "home" / "lake").as_uri()
    assert settings.mlflow_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    assert settings.experiment_name == "Social_Network_Ads_Experiment"
    assert settings.model_name == "SocialNetworkAdsModel"
    assert settings.storage_options() == {}
    assert list(settings.candidates) == list(CANDIDATE_NAMES)


def test_home_is_not_taken_from_the_shell_home_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    assert Settings().home != Path("/somewhere/else")


def test_original_env_file_keeps_working(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MINIO_ACCESS_KEY=minio\nMINIO_SECRET_ACCESS_KEY=minio123\n"
        "DATA_REPO_BUCKET_NAME=data\nMLFLOW_S3_ENDPOINT_URL=http://s3:9000\n"
    )
    settings = Settings()
    assert settings.lake == "s3://data"
    options = settings.storage_options()
    assert options["key"] == "minio"
    assert options["secret"] == "minio123"  # pragma: allowlist secret
    assert options["client_kwargs"]["endpoint_url"] == "http://s3:9000"
    assert "minio123" not in str(settings.describe())


def test_canonical_names_win_over_tool_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tool:5000")
    assert Settings().mlflow_uri == "http://tool:5000"
    monkeypatch.setenv("SOCIALADS_TRACKING_URI", "http://ours:5000")
    assert Settings().mlflow_uri == "http://ours:5000"


def test_candidates_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALADS_CANDIDATES", "knn, svm_rbf")
    assert Settings().candidates == ["knn", "svm_rbf"]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SOCIALADS_CANDIDATES", "knn,deep_net", "deep_net"),
        ("SOCIALADS_TEST_SIZE", "1.5", "SOCIALADS_TEST_SIZE"),
        ("SOCIALADS_SELECTION_METRIC", "speed", "SOCIALADS_SELECTION_METRIC"),
        ("SOCIALADS_API_PORT", "http", "SOCIALADS_API_PORT"),
        ("SOCIALADS_MONITOR_WINDOW", "3600", "a number and s, m, h, d or w"),
        ("SOCIALADS_MONITOR_WINDOW", "0h", "longer than zero"),
        ("SOCIALADS_MONITOR_DRIFT_SHARE", "0", "SOCIALADS_MONITOR_DRIFT_SHARE"),
    ],
)
def test_malformed_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert fragment in str(info.value)


def test_monitoring_durations_and_an_empty_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.monitor_window == timedelta(hours=24)
    assert defaults.monitor_cron == "0 * * * *"  # hourly
    monkeypatch.setenv("SOCIALADS_MONITOR_WINDOW", "90m")
    monkeypatch.setenv("SOCIALADS_MONITOR_COOLDOWN", "PT2H")  # ISO 8601 works too
    monkeypatch.setenv("SOCIALADS_MONITOR_CRON", " ")
    settings = Settings()
    assert settings.monitor_window == timedelta(minutes=90)
    assert settings.monitor_cooldown == timedelta(hours=2)
    assert settings.monitor_cron is None


def test_credentials_come_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "only-the-key")
    with pytest.raises(ValidationError, match="pairs"):
        Settings()


def test_every_declared_candidate_has_a_family_and_grid() -> None:
    from socialads.models.candidates import CANDIDATES

    assert sorted(CANDIDATES) == sorted(CANDIDATE_NAMES)
    for name, candidate in CANDIDATES.items():
        assert candidate.name == name
        assert candidate.grid, name

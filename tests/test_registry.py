"""The promotion gate and the registry: a worse model never becomes champion; ties keep it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from socialads.models.registry import gate


@pytest.mark.parametrize(
    ("score", "champion", "promoted"),
    [(0.80, None, True), (0.90, 0.85, True), (0.85, 0.85, False), (0.70, 0.85, False)],
)
def test_gate_promotes_only_a_strictly_better_model(
    score: float, champion: float | None, promoted: bool
) -> None:
    decision, reason = gate(score, champion, "f1")
    assert decision is promoted
    assert "f1" in reason
    assert f"{score:.4f}" in reason


@pytest.fixture(scope="module")
def fitted(raw_bytes: bytes) -> dict[str, Any]:
    """A good and a deliberately weak model on the real split."""
    from socialads.data.validation import load_and_validate
    from socialads.features.preprocessing import split
    from socialads.models.candidates import CANDIDATES
    from socialads.models.search import search_candidate

    train, test = split(load_and_validate(raw_bytes), 0.2, 42)
    good = search_candidate(
        CANDIDATES["knn"], train, test, metric="f1", cv_folds=3, random_state=42
    )
    weak = search_candidate(
        CANDIDATES["logistic_regression"], train, test, metric="f1", cv_folds=3, random_state=42
    )
    assert good.holdout["f1"] > weak.holdout["f1"]
    return {"train": train, "test": test, "good": good, "weak": weak}


def _register(settings: Any, result: Any, train: Any, test: Any) -> Any:
    from socialads.models import registry, tracking

    client = tracking.connect(settings)
    experiment = tracking.ensure_experiment(client, settings)
    run = client.create_run(experiment).info.run_id
    model = tracking.log_best_model(settings, run, result, train, "f1")
    return registry.register_and_gate(client, settings, model, run, result.holdout["f1"], test)


def test_registry_keeps_the_champion_against_worse_and_equal_models(
    fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from socialads.models import registry, tracking
    from socialads.settings import Settings

    monkeypatch.setenv("SOCIALADS_HOME", str(tmp_path / "home"))
    settings = Settings()
    train, test = fitted["train"], fitted["test"]

    first = _register(settings, fitted["good"], train, test)
    assert (first.promoted, first.version, first.alias) == (True, "1", "champion")

    worse = _register(settings, fitted["weak"], train, test)
    assert (worse.promoted, worse.alias, worse.champion_version) == (False, "challenger", "1")
    assert worse.champion_score == pytest.approx(fitted["good"].holdout["f1"])

    same = _register(settings, fitted["good"], train, test)
    assert same.promoted is False
    assert "=" in same.reason

    client = tracking.connect(settings)
    assert str(registry.champion_version(client, settings).version) == "1"
    tags = client.get_model_version(settings.model_name, worse.version).tags
    assert tags[registry.TAG_DECISION] == "challenger"
    assert tags[registry.TAG_REASON] == worse.reason

    champion = registry.load_champion(settings)
    assert champion.version == "1"
    probabilities = champion.pipeline.predict_proba(test[["Gender", "Age", "EstimatedSalary"]])
    expected = fitted["good"].pipeline.predict_proba(test[["Gender", "Age", "EstimatedSalary"]])
    assert (probabilities == expected).all()


def test_no_champion_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from socialads.errors import NoChampionError
    from socialads.models.registry import load_champion
    from socialads.settings import Settings

    monkeypatch.setenv("SOCIALADS_HOME", str(tmp_path / "home"))
    with pytest.raises(NoChampionError, match="socialads train"):
        load_champion(Settings())

"""The HTTP API with an injected model: contract, validation, limits, ops routes, key, reload.

No MLflow here: the app gets a loader that returns a ChampionModel around a pipeline
fitted once per module on the bundled dataset: version 1 with its ONNX graph (served by ONNX
Runtime), version 2 without one (as a version trained before the conversion existed: served
by its scikit-learn Pipeline).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from socialads.data.schema import AGE, BOUNDS, FEATURES, GENDER, SALARY, TARGET
from socialads.errors import NoChampionError, RegistryError
from socialads.models import onnx_export
from socialads.models.registry import ChampionModel
from socialads.serving.app import create_app
from socialads.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2 on import
    from fastapi.testclient import TestClient

ATOL = onnx_export.TOLERANCE
BUYER = {"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}
NON_BUYER = {"Gender": "Male", "Age": 19, "EstimatedSalary": 19000}
API_KEY = "k3y-for-tests-only"  # pragma: allowlist secret
MAX_RECORDS = 5
MAX_BODY = 2048


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(raw_bytes: bytes) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(raw_bytes))


def _fit(dataset: pd.DataFrame, family: str) -> Any:
    from socialads.features.preprocessing import build_pipeline
    from socialads.models.candidates import CANDIDATES

    pipeline = build_pipeline(CANDIDATES[family].factory(0))
    return pipeline.fit(dataset[list(FEATURES)], dataset[TARGET])


@pytest.fixture(scope="module")
def pipelines(dataset: pd.DataFrame) -> dict[str, Any]:
    """Version 1: logistic regression; version 2: Gaussian naive Bayes."""
    return {"1": _fit(dataset, "logistic_regression"), "2": _fit(dataset, "gaussian_nb")}


@pytest.fixture(scope="module")
def graphs(pipelines: dict[str, Any]) -> dict[str, bytes]:
    """The ONNX graph of version 1 only."""
    return {"1": onnx_export.convert(pipelines["1"])}


def champion(
    pipelines: dict[str, Any], version: str, graphs: dict[str, bytes] | None = None
) -> ChampionModel:
    return ChampionModel(
        name="SocialNetworkAdsModel",
        version=version,
        alias="champion",
        run_id=f"run-{version}",
        pipeline=pipelines[version],
        metrics={"holdout_f1": 0.8 + int(version) / 100, "cv_f1": 0.79},
        loaded_at=datetime.now(UTC),
        onnx=(graphs or {}).get(version),
    )


def make_settings(home: Path, **variables: Any) -> Settings:
    """Settings from explicit variables only (the test process's environment aside)."""
    values: dict[str, Any] = {
        "SOCIALADS_HOME": str(home),
        "SOCIALADS_API_KEY": None,
        "SOCIALADS_RELOAD_INTERVAL": 0.05,
        "SOCIALADS_BATCH_MAX_RECORDS": MAX_RECORDS,
        "SOCIALADS_MAX_BODY_BYTES": MAX_BODY,
        "SOCIALADS_REQUIRE_MODEL_AT_START": False,
    }
    return Settings(**(values | variables))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def ready(client: TestClient) -> TestClient:
    wait_until(lambda: client.get("/ready").status_code == 200)
    return client


@pytest.fixture(scope="module")
def client(
    pipelines: dict[str, Any], graphs: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The app serving version 1 on ONNX Runtime, started (lifespan) once for the module."""
    settings = make_settings(tmp_path_factory.mktemp("home"))
    app = create_app(settings, lambda s: champion(pipelines, "1", graphs))
    with TestClient(app) as test_client:
        yield ready(test_client)


def scores(body: dict[str, Any]) -> dict[str, Any]:
    """A /predict answer without its request id (new for every request)."""
    return {key: value for key, value in body.items() if key != "request_id"}


def expected_probability(pipeline: Any, record: dict[str, Any]) -> float:
    """What the pipeline itself says, through pandas and sklearn."""
    row = record | {GENDER: record[GENDER].strip().title()}
    return float(pipeline.predict_proba(pd.DataFrame([row])[list(FEATURES)])[0, 1])


# -- the contract ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "prediction", "label"), [(BUYER, 1, "COMPRA"), (NON_BUYER, 0, "NO COMPRA")]
)
def test_predict_contract(
    client: TestClient,
    pipelines: dict[str, Any],
    record: dict[str, Any],
    prediction: int,
    label: str,
) -> None:
    response = client.post("/predict", json=record)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"prediction", "label", "probability", "model_version", "request_id"}
    assert response.headers["x-request-id"] == body["request_id"]
    assert body["prediction"] == prediction
    assert body["label"] == label
    assert body["model_version"] == "1"
    assert abs(body["probability"] - expected_probability(pipelines["1"], record)) <= ATOL
    assert (body["probability"] > 0.5) == (prediction == 1)


@pytest.mark.parametrize("gender", ["Male", "male", " MALE ", "mAlE", "\tmale\n"])
def test_gender_is_normalised(client: TestClient, gender: str) -> None:
    canonical = scores(client.post("/predict", json=NON_BUYER | {"Gender": "Male"}).json())
    assert scores(client.post("/predict", json=NON_BUYER | {"Gender": gender}).json()) == canonical


def test_integer_and_float_numbers_and_extra_fields_are_accepted(client: TestClient) -> None:
    as_float = client.post("/predict", json=BUYER | {"Age": 45.0, "EstimatedSalary": 90000.0})
    with_extra = client.post("/predict", json=BUYER | {"User ID": 15624510, "Purchased": 0})
    assert as_float.status_code == with_extra.status_code == 200
    plain = client.post("/predict", json=BUYER).json()
    assert scores(as_float.json()) == scores(with_extra.json()) == scores(plain)


def test_bounds_are_inclusive(client: TestClient) -> None:
    for age in (BOUNDS[AGE].minimum, BOUNDS[AGE].maximum):
        for salary in (BOUNDS[SALARY].minimum, BOUNDS[SALARY].maximum):
            record = {"Gender": "Female", "Age": age, "EstimatedSalary": salary}
            assert client.post("/predict", json=record).status_code == 200


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown gender", BUYER | {"Gender": "Other"}, "Gender", "Female, Male"),
    ("gender number", BUYER | {"Gender": 1}, "Gender", "Female, Male"),
    ("gender null", BUYER | {"Gender": None}, "Gender", "Female, Male"),
    ("no gender", {"Age": 45, "EstimatedSalary": 90000}, "Gender", "required"),
    ("no age", {"Gender": "Male", "EstimatedSalary": 90000}, "Age", "required"),
    ("no salary", {"Gender": "Male", "Age": 45}, "EstimatedSalary", "required"),
    ("age text", BUYER | {"Age": "45"}, "Age", "number"),
    ("age boolean", BUYER | {"Age": True}, "Age", "number"),
    ("age null", BUYER | {"Age": None}, "Age", "number"),
    ("age list", BUYER | {"Age": [45]}, "Age", "number"),
    ("age too low", BUYER | {"Age": 17}, "Age", "between 18 and 100"),
    ("age too high", BUYER | {"Age": 100.5}, "Age", "between 18 and 100"),
    ("salary negative", BUYER | {"EstimatedSalary": -1}, "EstimatedSalary", "between 0 and"),
    ("salary too high", BUYER | {"EstimatedSalary": 1e7}, "EstimatedSalary", "between 0 and"),
    ("salary text", BUYER | {"EstimatedSalary": "lots"}, "EstimatedSalary", "number"),
]


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_input_is_400_naming_the_field(
    client: TestClient, record: dict[str, Any], field: str, words: str
) -> None:
    response = client.post("/predict", json=record)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["field"] == field
    assert words in body["reason"]
    assert {"field": field, "reason": body["reason"]} in body["errors"]
    assert field in body["detail"]


def test_every_invalid_field_is_reported(client: TestClient) -> None:
    body = client.post("/predict", json={"Gender": "x", "Age": 5}).json()
    assert [e["field"] for e in body["errors"]] == ["Gender", "Age", "EstimatedSalary"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"Gender": "Male", "Age": }', "not valid JSON"),
        (b'{"Gender": "Male"', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"Male"', "JSON object"),
        (b"", "JSON object"),
    ],
)
def test_malformed_body_is_400(client: TestClient, content: bytes, words: str) -> None:
    response = client.post(
        "/predict", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert words in response.json()["detail"]


def test_body_without_json_content_type_is_400(client: TestClient) -> None:
    response = client.post("/predict", content=b'{"Gender": "Male"}')
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["detail"]


def test_oversized_body_is_413(client: TestClient) -> None:
    padded = BUYER | {"padding": "x" * MAX_BODY}
    response = client.post("/predict", json=padded)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert str(MAX_BODY) in response.json()["detail"]


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"Gender": "Male", "padding": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_small_chunked_body_is_served(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"Gender": "Female", "Age": 45,'
        yield b' "EstimatedSalary": 90000}'

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["label"] == "COMPRA"


# -- batch ------------------------------------------------------------------------------------
def test_batch_predicts_valid_rows_and_names_the_bad_ones(
    client: TestClient, pipelines: dict[str, Any]
) -> None:
    records: list[Any] = [
        BUYER,
        {"Gender": "other", "Age": 30, "EstimatedSalary": 1000},
        NON_BUYER | {"Gender": " male "},
        {"Gender": "Female", "Age": 150},
        42,
    ]
    response = client.post("/predict/batch", json={"records": records})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1"
    assert body["count"] == 5
    assert [r["index"] for r in body["results"]] == [0, 2]
    first, second = body["results"]
    assert (first["prediction"], first["label"]) == (1, "COMPRA")
    assert (second["prediction"], second["label"]) == (0, "NO COMPRA")
    assert abs(first["probability"] - expected_probability(pipelines["1"], BUYER)) <= ATOL
    assert abs(second["probability"] - expected_probability(pipelines["1"], NON_BUYER)) <= ATOL
    problems = {(e["index"], e["field"]) for e in body["errors"]}
    assert problems == {(1, "Gender"), (3, "Age"), (3, "EstimatedSalary"), (4, "record")}
    age_error = next(e for e in body["errors"] if e["field"] == "Age")
    assert "between 18 and 100" in age_error["reason"]


def test_batch_single_matches_predict(client: TestClient) -> None:
    single = client.post("/predict", json=BUYER).json()
    batch = client.post("/predict/batch", json={"records": [BUYER]}).json()["results"][0]
    assert abs(batch["probability"] - single["probability"]) <= ATOL
    assert batch["prediction"] == single["prediction"]


def test_empty_batch(client: TestClient) -> None:
    body = client.post("/predict/batch", json={"records": []}).json()
    assert body["results"] == body["errors"] == []


def test_batch_over_the_limit_is_rejected(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"records": [BUYER] * (MAX_RECORDS + 1)})
    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "too_many_records"
    assert f"at most {MAX_RECORDS}" in body["detail"]


def test_batch_without_records_is_400(client: TestClient) -> None:
    response = client.post("/predict/batch", json=[BUYER])
    assert response.status_code == 400
    assert response.json()["field"] == "body"


# -- ops routes -------------------------------------------------------------------------------
def test_health_ready_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model_version": "1"}
    info = client.get("/model").json()
    assert info["name"] == "SocialNetworkAdsModel"
    assert info["version"] == "1"
    assert info["alias"] == "champion"
    assert info["run_id"] == "run-1"
    assert info["metrics"] == {"holdout_f1": 0.81, "cv_f1": 0.79}
    assert (info["engine"], info["engine_reason"]) == ("onnxruntime", None)
    assert info["estimator"] == "LogisticRegression"
    assert datetime.fromisoformat(info["loaded_at"]).tzinfo is not None


def test_openapi_documents_the_bounds_and_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    for name in (AGE, SALARY):
        assert schema["properties"][name]["minimum"] == BOUNDS[name].minimum
        assert schema["properties"][name]["maximum"] == BOUNDS[name].maximum
    assert set(schema["required"]) == set(FEATURES)
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }
    assert client.get("/docs").status_code == 200


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics(client: TestClient) -> None:
    client.post("/predict", json=BUYER)
    client.post("/predict", json=NON_BUYER)
    client.post("/predict", json={"Gender": "x"})
    client.get("/no-such-route")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, frozenset(labels.items()))]

    predict_200 = {"route": "/predict", "method": "POST", "status": "200"}
    assert value("socialads_http_requests_total", **predict_200) >= 2
    assert value("socialads_http_requests_total", **predict_200 | {"status": "400"}) >= 1
    assert value("socialads_http_requests_total", route="unmatched", method="GET", status="404")
    count = value("socialads_http_request_duration_seconds_count", route="/predict", status="200")
    inf = value(
        "socialads_http_request_duration_seconds_bucket", route="/predict", status="200", le="+Inf"
    )
    assert count == inf >= 2
    assert value("socialads_predictions_total", label="COMPRA") >= 1
    assert value("socialads_predictions_total", label="NO COMPRA") >= 1
    assert value("socialads_model_version") == 1
    info = {
        "name": "SocialNetworkAdsModel",
        "version": "1",
        "alias": "champion",
        "engine": "onnxruntime",
    }
    assert value("socialads_model_info", **info) == 1
    assert value("socialads_model_ready") == 1


# -- readiness before a model -------------------------------------------------------------------
def test_not_ready_until_a_champion_appears(pipelines: dict[str, Any], tmp_path: Path) -> None:
    """Default start: no champion → up but not ready, and the poller keeps trying."""
    available = threading.Event()

    def loader(settings: Settings) -> ChampionModel:
        if not available.is_set():
            raise NoChampionError("no 'champion' model yet")
        return champion(pipelines, "1")

    with TestClient(create_app(make_settings(tmp_path), loader)) as client:
        wait_until(lambda: "no 'champion'" in client.get("/ready").text)
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json()["status"] == "not_ready"
        assert client.get("/health").status_code == 200
        not_ready = client.post("/predict", json=BUYER)
        assert not_ready.status_code == 503
        assert not_ready.json()["error"] == "not_ready"
        assert client.get("/model").status_code == 503
        assert client.get("/metrics").status_code == 200
        available.set()
        ready(client)
        assert client.post("/predict", json=BUYER).json()["model_version"] == "1"


def test_require_model_at_start_fails_the_start(tmp_path: Path) -> None:
    def loader(settings: Settings) -> ChampionModel:
        raise NoChampionError("no 'champion' model yet")

    settings = make_settings(tmp_path, SOCIALADS_REQUIRE_MODEL_AT_START=True)
    with pytest.raises(NoChampionError), TestClient(create_app(settings, loader)):
        pass


# -- API key ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(
    pipelines: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("keyed"), SOCIALADS_API_KEY=API_KEY)
    with TestClient(create_app(settings, lambda s: champion(pipelines, "1"))) as test_client:
        yield ready(test_client)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}])
def test_api_key_required_when_configured(keyed: TestClient, headers: dict[str, str]) -> None:
    for method, path, body in (
        ("POST", "/predict", BUYER),
        ("POST", "/predict/batch", {"records": [BUYER]}),
        ("POST", "/admin/reload", None),
    ):
        response = keyed.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"
        assert API_KEY not in response.text


def test_api_key_accepted(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    headers = {"X-API-Key": API_KEY}
    with caplog.at_level(logging.DEBUG):
        assert keyed.post("/predict", json=BUYER, headers=headers).status_code == 200
        batch = keyed.post("/predict/batch", json={"records": [BUYER]}, headers=headers)
        assert batch.status_code == 200
        assert keyed.post("/admin/reload", headers=headers).status_code == 200
    assert API_KEY not in caplog.text


def test_open_routes_need_no_key(keyed: TestClient) -> None:
    for path in ("/health", "/ready", "/metrics", "/model", "/docs", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    security = keyed.get("/openapi.json").json()["components"]["securitySchemes"]
    assert any(s.get("name") == "X-API-Key" for s in security.values())


def test_no_key_configured_means_open(client: TestClient) -> None:
    assert client.post("/predict", json=BUYER).status_code == 200
    assert client.post("/predict", json=BUYER, headers={"X-API-Key": "anything"}).status_code == 200


# -- reload -------------------------------------------------------------------------------------
class Registry:
    """A fake registry: serves ``version``; ``fail`` breaks loads, ``probe_fail`` the check."""

    def __init__(self, pipelines: dict[str, Any], graphs: dict[str, bytes] | None = None) -> None:
        self.pipelines = pipelines
        self.graphs = graphs
        self.version = "1"
        self.fail: Exception | None = None
        self.probe_fail: Exception | None = None
        self.loads = 0

    def load(self, settings: Settings) -> ChampionModel:
        self.loads += 1
        if self.fail is not None:
            raise self.fail
        return champion(self.pipelines, self.version, self.graphs)

    def probe(self, settings: Settings) -> str | None:
        if self.probe_fail is not None:
            raise self.probe_fail
        return self.version


def test_admin_reload_swaps_to_the_new_version(
    pipelines: dict[str, Any], graphs: dict[str, bytes], tmp_path: Path
) -> None:
    """Hot reload from a version on ONNX Runtime to one on its scikit-learn Pipeline."""
    registry = Registry(pipelines, graphs)
    with TestClient(create_app(make_settings(tmp_path), registry.load)) as client:
        ready(client)
        assert client.get("/model").json()["version"] == "1"
        assert client.get("/model").json()["engine"] == "onnxruntime"
        unchanged = client.post("/admin/reload").json()
        assert unchanged["reloaded"] is False
        registry.version = "2"
        response = client.post("/admin/reload")
        assert response.status_code == 200
        assert response.json() == {
            "reloaded": True,
            "version": "2",
            "previous_version": "1",
            "detail": "now serving version 2",
        }
        info = client.get("/model").json()
        # Version 2 has no ONNX graph: the scikit-learn Pipeline serves it, and says why.
        assert (info["version"], info["engine"]) == ("2", "sklearn")
        assert info["estimator"] == "GaussianNB"
        assert "no ONNX graph" in info["engine_reason"]
        answer = client.post("/predict", json=BUYER).json()
        assert answer["model_version"] == "2"
        assert abs(answer["probability"] - expected_probability(pipelines["2"], BUYER)) <= ATOL
        assert client.post("/admin/reload", params={"force": True}).json()["reloaded"] is True


def test_failed_reload_keeps_serving_the_old_version(
    pipelines: dict[str, Any], tmp_path: Path
) -> None:
    registry = Registry(pipelines)
    with TestClient(create_app(make_settings(tmp_path), registry.load)) as client:
        ready(client)
        registry.version, registry.fail = "2", RegistryError("the registry is down")
        response = client.post("/admin/reload")
        assert response.status_code == 502
        assert "the registry is down" in response.json()["detail"]
        assert "still serving version 1" in response.json()["detail"]
        assert client.get("/ready").status_code == 200
        assert client.get("/model").json()["version"] == "1"
        assert client.post("/predict", json=BUYER).json()["model_version"] == "1"
        registry.fail = RuntimeError("a corrupt artifact")
        assert client.post("/admin/reload").status_code == 500
        assert client.post("/predict", json=BUYER).json()["model_version"] == "1"
        registry.fail = NoChampionError("the alias was removed")
        assert client.post("/admin/reload").status_code == 503
        assert client.get("/ready").status_code == 200
        samples = _samples(client.get("/metrics").text)
        assert samples[("socialads_model_reloads_total", frozenset({("outcome", "failed")}))] == 3


def test_poller_follows_the_alias_and_survives_failures(
    pipelines: dict[str, Any], tmp_path: Path
) -> None:
    registry = Registry(pipelines)
    app = create_app(make_settings(tmp_path), registry.load, probe=registry.probe)
    store = app.state.services.store
    with TestClient(app) as client:
        ready(client)
        loads = registry.loads
        time.sleep(0.3)  # several polls: the cheap probe only, no reload
        assert registry.loads == loads

        registry.probe_fail = RegistryError("the registry is unreachable")
        wait_until(lambda: "unreachable" in (store.last_error or ""))
        assert client.get("/ready").status_code == 200
        registry.probe_fail = None

        registry.version, registry.fail = "2", RegistryError("the artifact store is down")
        wait_until(lambda: "artifact store is down" in (store.last_error or ""))
        failed_loads = registry.loads
        time.sleep(0.6)  # 12 polls; the failing version is retried after 0.1, 0.2, 0.4 s
        assert registry.loads - failed_loads <= 3
        assert client.get("/model").json()["version"] == "1"
        assert client.post("/predict", json=BUYER).json()["model_version"] == "1"
        assert client.get("/ready").status_code == 200

        registry.fail = None
        wait_until(lambda: client.get("/model").json()["version"] == "2")
        assert client.post("/predict", json=BUYER).json()["model_version"] == "2"
        assert store.last_error is None


# -- the server edge ----------------------------------------------------------------------------
def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from socialads.errors import ConfigurationError
    from socialads.serving import server

    monkeypatch.setenv("SOCIALADS_API_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="SOCIALADS_API_PORT"):
        server.settings_from_environment()
    with pytest.raises(SystemExit) as exited:
        server.app_factory()
    assert exited.value.code == 2
    monkeypatch.delenv("SOCIALADS_API_PORT")
    monkeypatch.setenv("SOCIALADS_API_KEY", " ")
    with pytest.raises(ConfigurationError, match="SOCIALADS_API_KEY is set but empty"):
        server.settings_from_environment()


def test_workers_get_the_settings_the_environment_does_not_give(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from socialads.serving.server import worker_variables

    monkeypatch.setenv("SOCIALADS_HOME", str(tmp_path))
    monkeypatch.setenv("SOCIALADS_API_WORKERS", "3")
    settings = Settings().model_copy(
        update={"reload_interval": 0.5, "api_port": 9000, "candidates": ["knn", "svm_rbf"]}
    )
    assert worker_variables(settings) == {
        "SOCIALADS_RELOAD_INTERVAL": "0.5",
        "SOCIALADS_API_PORT": "9000",
        "SOCIALADS_CANDIDATES": "knn,svm_rbf",
    }
    monkeypatch.setenv("SOCIALADS_RELOAD_INTERVAL", "0.5")
    assert "SOCIALADS_RELOAD_INTERVAL" not in worker_variables(settings)


# -- the prediction log and feedback ------------------------------------------------------------
def test_predictions_and_labels_are_logged_with_the_ids_returned(
    pipelines: dict[str, Any], graphs: dict[str, bytes], tmp_path: Path
) -> None:
    from socialads.data.lake import Lake
    from socialads.data.production import FEEDBACK_LOG, PREDICTION_LOG, read

    settings = make_settings(tmp_path)
    app = create_app(settings, lambda s: champion(pipelines, "1", graphs))
    with TestClient(app) as client:
        ready(client)
        given = client.post("/predict", json=BUYER, headers={"X-Request-ID": "order-7:a"})
        replaced = client.post("/predict", json=BUYER, headers={"X-Request-ID": 'x"; drop'})
        batch = client.post("/predict/batch", json={"records": [NON_BUYER, {"Age": 3}, BUYER]})
        assert given.json()["request_id"] == given.headers["x-request-id"] == "order-7:a"
        assert replaced.json()["request_id"] not in ('x"; drop', "")  # not a sane id: a new one
        rows = batch.json()["results"]
        assert [r["request_id"] for r in rows] == [
            f"{batch.json()['request_id']}-0",
            f"{batch.json()['request_id']}-2",
        ]
        one = client.post("/feedback", json={"request_id": "order-7:a", "purchased": 1})
        labels = [{"request_id": rows[0]["request_id"], "purchased": 0}]
        many = client.post("/feedback", json=labels)
        assert (one.status_code, one.json(), many.status_code) == (202, {"accepted": 1}, 202)
        bad = client.post("/feedback", json=[{"request_id": "a", "purchased": True}])
        assert (bad.status_code, bad.json()["field"]) == (400, "0.purchased"), bad.text
        missing = client.post("/feedback", json={"purchased": 1})
        assert (missing.status_code, missing.json()["field"]) == (400, "request_id")
    # Closing the app (lifespan end) wrote what was buffered.
    lake = Lake.from_settings(settings)
    logged = read(lake, PREDICTION_LOG)
    assert sorted(logged["request_id"]) == sorted(
        [given.json()["request_id"], replaced.json()["request_id"]]
        + [r["request_id"] for r in rows]
    )
    assert logged.set_index("request_id").loc["order-7:a", "source"] == "api"
    assert (logged["source"] == "batch").sum() == 2
    stored = logged.set_index("request_id").loc[rows[0]["request_id"]]
    assert stored["probability"] == rows[0]["probability"]
    assert (stored["Gender"], stored["Age"]) == ("Male", 19.0)
    labels = read(lake, FEEDBACK_LOG)
    assert sorted(labels["request_id"]) == sorted(["order-7:a", rows[0]["request_id"]])


def test_the_log_can_be_turned_off(
    pipelines: dict[str, Any], graphs: dict[str, bytes], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, SOCIALADS_PREDICTION_LOG=False)
    with TestClient(create_app(settings, lambda s: champion(pipelines, "1", graphs))) as client:
        ready(client)
        assert client.post("/predict", json=BUYER).status_code == 200
    assert not (tmp_path / "lake" / "predictions").exists()


def test_not_ready_has_one_body_everywhere(tmp_path: Path) -> None:
    """Before a model: /ready, /predict, /predict/batch and /model answer the same 503 body."""

    def loader(settings: Settings) -> ChampionModel:
        raise NoChampionError("no 'champion' model yet")

    with TestClient(create_app(make_settings(tmp_path), loader)) as client:
        wait_until(lambda: "no 'champion'" in client.get("/ready").text)
        answers = [
            client.get("/ready"),
            client.post("/predict", json=BUYER),
            client.post("/predict/batch", json={"records": [BUYER]}),
            client.get("/model"),
        ]
    assert [response.status_code for response in answers] == [503] * 4
    body = answers[0].json()
    assert set(body) == {"error", "status", "reason", "detail"}
    assert (body["error"], body["status"]) == ("not_ready", "not_ready")
    assert "no 'champion' model yet" in body["reason"]
    assert body["detail"] == f"no model loaded yet: {body['reason']}"
    assert all(response.json() == body for response in answers)

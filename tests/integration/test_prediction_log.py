"""The prediction log and feedback of a real `socialads serve`, written to real S3 (SeaweedFS).

The registry is a local MLflow store (the one of test_serve); the lake is a bucket of the
session's S3 server, reached through a :class:`FaultProxy` so that a test can make S3 vanish
in the middle of traffic and come back.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultproxy import FaultProxy
from test_serve import (  # noqa: F401 (fixtures used by name)
    BUYER,
    MODEL,
    START_TIMEOUT,
    Registry,
    Server,
    champion_versions,
    launch,
    registry,
    samples,
)
from testkit import environ_without_tools

from socialads.data.lake import Lake
from socialads.data.production import FEEDBACK_LOG, PREDICTION_LOG, labelled_rows, read

pytestmark = pytest.mark.integration

DROPPED = "socialads_prediction_log_dropped_total"
CLI = [sys.executable, "-m", "socialads"]


@pytest.fixture
def lake_env(stack: Any) -> Iterator[tuple[dict[str, str], FaultProxy, Lake]]:
    """A fresh bucket behind a fault proxy: the env that points serve at it, and the lake."""
    bucket = f"plog-{secrets.token_hex(4)}"
    stack.s3fs().mkdir(bucket)
    proxy = FaultProxy(stack.s3_port).start()
    env = {
        "SOCIALADS_LAKE_URL": f"s3://{bucket}",
        "SOCIALADS_S3_ENDPOINT_URL": proxy.url,
        "SOCIALADS_S3_ACCESS_KEY": stack.access_key,
        "SOCIALADS_S3_SECRET_KEY": stack.secret_key,
        "SOCIALADS_S3_REGION": "us-east-1",
    }
    # The test reads the bucket directly, not through the proxy.
    lake = Lake(
        f"s3://{bucket}",
        {
            "key": stack.access_key,
            "secret": stack.secret_key,
            "client_kwargs": {"endpoint_url": stack.s3_endpoint_url, "region_name": "us-east-1"},
            "skip_instance_cache": True,
            "use_listings_cache": False,
        },
        retries=0,
    )
    try:
        yield env, proxy, lake
    finally:
        proxy.close()


@pytest.fixture
def serve(
    champion_versions: dict[str, str],  # noqa: F811
    registry: Registry,  # noqa: F811
    lake_env: tuple[dict[str, str], FaultProxy, Lake],
    tmp_path: Path,
) -> Iterator[Callable[..., Server]]:
    """Start `socialads serve` on the registry with its log in the proxied bucket."""
    started: list[Server] = []
    registry.set_champion(MODEL, champion_versions["logistic_regression"])

    def start(*options: str, **variables: str) -> Server:
        env = environ_without_tools() | {
            "SOCIALADS_HOME": str(registry.home),
            "SOCIALADS_MODEL_NAME": MODEL,
            "PYTHONUNBUFFERED": "1",
            **lake_env[0],
            **variables,
        }
        server = launch(env, tmp_path, *options)
        started.append(server)
        server.wait_for("/ready", 200)
        return server

    yield start
    for server in started:
        server.stop()


def predict(server: Server, **headers: str) -> httpx.Response:
    """One /predict on a fresh connection (spreads over the workers), retried while a worker
    is still loading its model."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        response = httpx.post(f"{server.url}/predict", json=BUYER, headers=headers, timeout=10)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_every_prediction_is_logged_once_with_the_ids_returned(
    serve: Callable[..., Server], lake_env: tuple[dict[str, str], FaultProxy, Lake]
) -> None:
    _, _, lake = lake_env
    server = serve("--workers", "2")
    ids = []
    for n in range(30):
        headers = {"X-Request-ID": f"client-{n}"} if n % 3 == 0 else {}
        response = predict(server, **headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["request_id"] == response.headers["x-request-id"]
        if headers:
            assert body["request_id"] == headers["X-Request-ID"]
        ids.append(body["request_id"])
    records = [BUYER, {**BUYER, "Age": 20}, {"Gender": "Robot", "Age": 30, "EstimatedSalary": 1}]
    for _ in range(5):
        response = httpx.post(f"{server.url}/predict/batch", json={"records": records}, timeout=10)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 2  # the invalid row is reported, not predicted, not logged
        ids += [result["request_id"] for result in results]
    labels = [{"request_id": rid, "purchased": n % 2} for n, rid in enumerate(ids[:10])]
    response = httpx.post(f"{server.url}/feedback", json=labels, timeout=10)
    assert response.status_code == 202, response.text
    bad = httpx.post(f"{server.url}/feedback", json={"request_id": "x", "purchased": 3})
    assert bad.status_code == 400 and bad.json()["field"] == "purchased", bad.text

    server.stop()  # graceful: each worker writes what it buffered
    assert server.process.returncode == 0, server.output()
    logged = read(lake, PREDICTION_LOG)
    assert sorted(logged["request_id"]) == sorted(ids)  # exactly once each
    assert logged["source"].value_counts().to_dict() == {"api": 30, "batch": 10}
    assert set(logged["model_version"]) == {"1"}
    assert len(read(lake, FEEDBACK_LOG)) == 10
    start = logged["timestamp"].min().to_pydatetime()
    joined = labelled_rows(lake, start, start + timedelta(days=1))
    assert sorted(joined["request_id"]) == sorted(ids[:10])


def test_s3_outage_keeps_every_request_200_counts_drops_and_resumes(
    serve: Callable[..., Server], lake_env: tuple[dict[str, str], FaultProxy, Lake]
) -> None:
    _, proxy, lake = lake_env
    server = serve(
        SOCIALADS_PREDICTION_LOG_FLUSH_SECONDS="0.5",
        SOCIALADS_PREDICTION_LOG_MAX_BUFFERED="20",
        SOCIALADS_PREDICTION_LOG_FLUSH_ROWS="10",
        SOCIALADS_IO_RETRIES="0",
    )
    before = [predict(server).json()["request_id"] for _ in range(5)]
    deadline = time.monotonic() + 30
    while len(read(lake, PREDICTION_LOG)) < 5:  # flushed while S3 is up
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.3)

    proxy.cut()
    during = []
    for _ in range(50):
        response = predict(server)
        assert response.status_code == 200, response.text
        during.append(response.json()["request_id"])
    deadline = time.monotonic() + 30
    while samples(server.get("/metrics").text).get((DROPPED, ())) != 30.0:
        assert time.monotonic() < deadline, server.get("/metrics").text
        time.sleep(0.3)

    proxy.restore()
    # Until the next flush gets through, the buffer is still full and new records are dropped
    # (and counted); the log has resumed once the outage's buffered records are in the lake.
    deadline = time.monotonic() + 30
    while len(read(lake, PREDICTION_LOG)) < 25:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.3)
    after = [predict(server).json()["request_id"] for _ in range(5)]
    server.stop()
    logged = set(read(lake, PREDICTION_LOG)["request_id"])
    # Kept: what came before, the first 20 of the outage (the buffer's size), what came after.
    assert logged == set(before) | set(during[:20]) | set(after), server.output()
    output = server.output()
    assert output.count("predictions log: cannot write to") == 1, output  # once per episode
    assert "30 records were dropped" in output


def test_kill_9_loses_at_most_the_unflushed_window(
    serve: Callable[..., Server], lake_env: tuple[dict[str, str], FaultProxy, Lake]
) -> None:
    _, _, lake = lake_env
    interval = 1.0
    server = serve(SOCIALADS_PREDICTION_LOG_FLUSH_SECONDS=str(interval))
    old = [predict(server).json()["request_id"] for _ in range(20)]
    time.sleep(3 * interval)  # older than the flush interval: written by now
    recent = [predict(server).json()["request_id"] for _ in range(5)]
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    logged = set(read(lake, PREDICTION_LOG)["request_id"])
    assert set(old) <= logged
    assert logged <= set(old) | set(recent)


def test_score_reads_and_writes_s3_rejects_bad_rows_and_logs_the_rest(
    champion_versions: dict[str, str],  # noqa: F811
    registry: Registry,  # noqa: F811
    lake_env: tuple[dict[str, str], FaultProxy, Lake],
    raw_bytes: bytes,
    tmp_path: Path,
) -> None:
    import pandas as pd

    env, _, lake = lake_env
    registry.set_champion(MODEL, champion_versions["logistic_regression"])
    lines = raw_bytes.decode().splitlines()
    lines[2] = "15000002,Robot,30,50000,0"
    lines[9] = "15000009,Male,17,50000,0"
    lake.write_bytes("incoming/users.csv", ("\n".join(lines) + "\n").encode())
    source, target = lake.uri("incoming/users.csv"), lake.uri("scores/users.parquet")
    done = subprocess.run(
        [*CLI, "score", "-i", source, "-o", target, "--json"],
        env=environ_without_tools()
        | {"SOCIALADS_HOME": str(registry.home), "SOCIALADS_MODEL_NAME": MODEL, **env},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["rows_scored"], summary["rows_rejected"]) == (398, 2)
    scores = pd.read_parquet(io.BytesIO(lake.read_bytes("scores/users.parquet")))
    rejects = pd.read_csv(io.BytesIO(lake.read_bytes("scores/users.rejects.csv")))
    assert len(scores) == 398 and rejects["row"].tolist() == [2, 9]
    logged = read(lake, PREDICTION_LOG)
    assert sorted(logged["request_id"]) == sorted(scores["request_id"])
    assert set(logged["source"]) == {"score"}

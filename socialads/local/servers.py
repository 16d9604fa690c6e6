"""Each local server declared once: its command line, its environment and its health check.

The native stack (:mod:`socialads.local.stack`) runs all three, the embedded default
(:mod:`socialads.local.embedded`) the Prefect server alone. docker-compose.yaml runs the MLflow
and Prefect servers with the same flags and variables, only addresses, ports, paths and the
database host differ (tests/test_compose.py checks it); its S3 is MinIO with the same
credentials and bucket names. `weed mini` also saves its flags to <dir>/mini.options and
reloads them at start: flags given win, dropped ones linger.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socialads.local.supervisor import Service, http_ok

S3_REGION = "us-east-1"
# SeaweedFS mini's built-in worker always dials the admin http port + 10000.
ADMIN_GRPC_OFFSET = 10000


# -- S3 (SeaweedFS) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeaweedPorts:
    """The ports of `weed mini` (all on one host)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int

    @property
    def admin_grpc(self) -> int:
        """Admin gRPC port: fixed at admin + 10000 because mini's worker dials exactly that."""
        return self.admin + ADMIN_GRPC_OFFSET


def s3_identities(access_key: str, secret_key: str) -> dict[str, Any]:
    """The -s3.config document: a single admin identity with the key pair."""
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def seaweedfs(
    *,
    host: str,
    ports: SeaweedPorts,
    data_dir: Path,
    identities_file: Path,
    bucket: str,
    access_key: str,
    secret_key: str,
    socket_dir: Path,
) -> Service:
    """SeaweedFS all-in-one as the S3 server: every port pinned, the optional servers off.

    Healthy once S3 answers, the key pair works and ``bucket`` exists (created if missing).
    """
    p = ports
    argv = (
        "weed",
        "mini",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-s3.port={p.s3}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-s3.config={identities_file}",
        f"-bucket={bucket}",
        f"-master.port={p.master}",
        f"-master.port.grpc={p.master_grpc}",
        f"-volume.port={p.volume}",
        f"-volume.port.grpc={p.volume_grpc}",
        f"-filer.port={p.filer}",
        f"-filer.port.grpc={p.filer_grpc}",
        f"-admin.port={p.admin}",
        f"-admin.port.grpc={p.admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={_socket_path(socket_dir, p.s3, 'filer')}",
        f"-s3.localSocket={_socket_path(socket_dir, p.s3, 's3')}",
    )
    endpoint = f"http://{host}:{p.s3}"
    return Service(
        name="s3",
        argv=argv,
        env={},  # everything is on the command line
        health=lambda: s3_ready(endpoint, access_key, secret_key, bucket),
        health_url=f"{endpoint}/healthz",
        dirs=(data_dir,),
    )


def _socket_path(folder: Path, s3_port: int, name: str) -> Path:
    """Unix socket of a weed server: in ``folder`` (weed leaves it behind), unless too long."""
    path = folder / f"{name}.sock"
    if len(str(path)) < 100:
        return path
    return Path(f"/tmp/socialads-stack-{s3_port}-{name}.sock")


def _s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=S3_REGION,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )


def s3_ready(endpoint: str, access_key: str, secret_key: str, bucket: str) -> bool:
    """S3 answers, the key pair works and ``bucket`` exists (asked to be created if not)."""
    if not http_ok(f"{endpoint}/healthz"):
        return False
    from botocore.exceptions import BotoCoreError, ClientError

    client = _s3_client(endpoint, access_key, secret_key)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}:
            with contextlib.suppress(ClientError):
                client.create_bucket(Bucket=bucket)
        return False
    except BotoCoreError:
        return False
    return True


def s3_rejects_wrong_secret(endpoint: str, access_key: str, secret_key: str) -> bool:
    """Whether S3 refuses ``secret_key`` spoilt: the identities were loaded."""
    from botocore.exceptions import ClientError

    try:
        _s3_client(endpoint, access_key, secret_key + "-wrong").list_buckets()
    except ClientError:
        return True
    return False


# -- MLflow ------------------------------------------------------------------------------------


def mlflow_server(
    *,
    host: str,
    port: int,
    workers: int,
    backend_store_uri: str,
    artifacts_bucket: str,
    allowed_hosts: Sequence[str],
    s3_endpoint: str,
    access_key: str,
    secret_key: str,
) -> Service:
    """MLflow tracking server on ``backend_store_uri``, proxying artifacts to the S3 bucket."""
    argv = (
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        f"s3://{artifacts_bucket}/",
        "--serve-artifacts",
        "--allowed-hosts",
        ",".join(allowed_hosts),
    )
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": S3_REGION,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The GenAI job runner forks seven huey consumers; nothing here uses it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    url = f"http://{host}:{port}/health"
    return Service(name="mlflow", argv=argv, env=env, health=lambda: http_ok(url), health_url=url)


# -- Prefect -----------------------------------------------------------------------------------


def prefect_server(
    *, home: Path, host: str, port: int, database_url: str | None = None, ui: bool = False
) -> Service:
    """Prefect server with its own PREFECT_HOME; one worker, since the default messaging broker
    lives in memory. Without ``database_url`` its database is SQLite under ``home``."""
    api_url = f"http://{host}:{port}/api"
    argv = ("prefect", "server", "start", "--host", host, "--port", str(port), "--workers", "1")
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        # The server builds its UI here at start (the default is inside site-packages, which
        # a server run by another user than the one who installed it cannot write).
        "PREFECT_SERVER_UI_STATIC_DIRECTORY": str(home / "ui"),
        "PREFECT_SERVER_UI_API_URL": api_url,
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    url = f"{api_url}/health"
    return Service(
        name="prefect",
        argv=argv,
        env=env,
        health=lambda: http_ok(url),
        health_url=url,
        dirs=(home,),
    )

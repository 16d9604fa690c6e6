#!/usr/bin/env python3
"""Start natively, on loopback, what docker compose runs: S3 (SeaweedFS), MLflow and Prefect.

Usage::

    python scripts/stack.py up|down|env|status [--dir DIR] [--base-port N]
                            [--db-prefix P] [--drop-dbs]
    eval "$(python scripts/stack.py env)"      # point the socialads app at the stack

``up`` prints progress on stderr and the ``export`` lines on stdout, so
``eval "$(python scripts/stack.py up)"`` works too. PostgreSQL is not started: the one at
``SOCIALADS_STACK_PG_DSN`` is used, and the two databases are created there when missing.

Importable: ``Stack(StackConfig.from_env(...)).up()`` returns the client environment,
``.down()`` stops what ``up`` started (see tests/integration/conftest.py).

Ports are ``--base-port`` (default 19000) plus a fixed offset; each one can be overridden:

    offset  env var                              what
    +0      SOCIALADS_STACK_S3_PORT              S3 API (weed mini -s3.port)
    +1      SOCIALADS_STACK_MLFLOW_PORT          MLflow server
    +2      SOCIALADS_STACK_PREFECT_PORT         Prefect server (API under /api, UI on /)
    +3      SOCIALADS_STACK_WEED_MASTER_PORT     SeaweedFS master http
    +4      SOCIALADS_STACK_WEED_VOLUME_PORT     SeaweedFS volume http
    +5      SOCIALADS_STACK_WEED_FILER_PORT      SeaweedFS filer http
    +6      SOCIALADS_STACK_WEED_ADMIN_PORT      SeaweedFS admin http (mini always starts it)
    +7      SOCIALADS_STACK_S3_GRPC_PORT         S3 gRPC
    +8      SOCIALADS_STACK_WEED_MASTER_GRPC_PORT
    +9      SOCIALADS_STACK_WEED_VOLUME_GRPC_PORT
    +10     SOCIALADS_STACK_WEED_FILER_GRPC_PORT
    admin+10000 (not configurable)           SeaweedFS admin gRPC: mini's built-in worker
                                             always dials admin http port + 10000

Keep every port, admin+10000 included (so base <= 22750), below the kernel's ephemeral range
(32768-60999 here): there a health poll of a not-yet-listening port can connect to itself.

Other settings (environment, all optional):

    SOCIALADS_STACK_DIR             state dir: pids, logs, data (default .socialads/stack)
    SOCIALADS_STACK_BASE_PORT       base port (default 19000)
    SOCIALADS_STACK_S3_ACCESS_KEY   S3 admin access key (else MINIO_ACCESS_KEY, else minio)
    SOCIALADS_STACK_S3_SECRET_KEY   S3 admin secret (else MINIO_SECRET_ACCESS_KEY, else minio123)
    SOCIALADS_ARTIFACTS_BUCKET      MLflow artifact bucket, created at start (default mlflow)
    SOCIALADS_STACK_PG_DSN          admin DSN, URL form
                                    (default postgresql://postgres@127.0.0.1:5432/postgres)
    SOCIALADS_STACK_DB_PREFIX       prefix of the database names <prefix>mlflow, <prefix>prefect
    SOCIALADS_STACK_DROP_DBS        1: ``down`` drops the databases that ``up`` created
    SOCIALADS_STACK_PREFECT_UI      0: no Prefect UI (default 1, as in compose)
    SOCIALADS_STACK_MLFLOW_WORKERS  MLflow server workers (default 1; the machine has 2 cores)
    SOCIALADS_STACK_TIMEOUT         seconds each service gets to become healthy (default 180)
    SOCIALADS_STACK_GRACE           seconds between SIGTERM and SIGKILL on down (default 15)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 19000
DEFAULT_DIR = ".socialads/stack"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_ACCESS_KEY = "minio"
DEFAULT_SECRET_KEY = "minio123"  # pragma: allowlist secret (documented dev default)
S3_REGION = "us-east-1"
ADMIN_GRPC_OFFSET = 10000
STATE_FILE = "state.json"
SERVICES: tuple[str, ...] = ("s3", "mlflow", "prefect")
# The compose service name/port (.env.example MLFLOW_HOST, MLFLOW_PORT) other containers use;
# MLflow checks the Host header.
COMPOSE_MLFLOW_HOSTS: tuple[str, ...] = ("mlflow:5001", "mlflow")
# Variables of the tools that must not leak from the caller's shell into the servers.
_SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_", "PREFECT_", "SOCIALADS_", "MINIO_", "S3_")


class StackError(RuntimeError):
    """The stack could not be started, checked or stopped; the message says why."""


# -- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ports:
    """Every TCP port the stack listens on (all on 127.0.0.1)."""

    s3: int
    mlflow: int
    prefect: int
    weed_master: int
    weed_volume: int
    weed_filer: int
    weed_admin: int
    s3_grpc: int
    weed_master_grpc: int
    weed_volume_grpc: int
    weed_filer_grpc: int

    @property
    def weed_admin_grpc(self) -> int:
        """Admin gRPC port: fixed at admin + 10000 because mini's worker dials exactly that."""
        return self.weed_admin + ADMIN_GRPC_OFFSET

    @classmethod
    def from_base(cls, base: int, environ: Mapping[str, str] | None = None) -> Ports:
        """Ports at fixed offsets from ``base``, each overridable by its env var."""
        env = os.environ if environ is None else environ
        values = {}
        for offset, field in enumerate(dataclasses.fields(cls)):
            override = env.get(f"SOCIALADS_STACK_{field.name.upper()}_PORT")
            values[field.name] = int(override) if override else base + offset
        return cls(**values)

    def all(self) -> dict[str, int]:
        """Name → port of every listening port, the derived admin gRPC one included."""
        return {**dataclasses.asdict(self), "weed_admin_grpc": self.weed_admin_grpc}

    def of(self, services: Iterable[str]) -> dict[str, int]:
        """Name → port of the ports ``services`` listen on (S3 owns every SeaweedFS port)."""
        chosen = set(services)
        return {
            name: port
            for name, port in self.all().items()
            if ("s3" if name not in {"mlflow", "prefect"} else name) in chosen
        }


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Everything the launcher needs; ``from_env`` reads the variables listed on top."""

    state_dir: Path
    ports: Ports
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    artifacts_bucket: str = "mlflow"
    pg_dsn: str = DEFAULT_PG_DSN
    db_prefix: str = ""
    drop_dbs: bool = False
    prefect_ui: bool = True
    mlflow_workers: int = 1
    timeout: float = 180.0
    grace: float = 15.0
    host: str = HOST

    @classmethod
    def from_env(
        cls,
        state_dir: str | Path | None = None,
        base_port: int | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> StackConfig:
        """Build from arguments, then ``SOCIALADS_STACK_*`` variables, then defaults."""
        env = os.environ if environ is None else environ
        directory = Path(state_dir or env.get("SOCIALADS_STACK_DIR") or DEFAULT_DIR)
        base = base_port or int(env.get("SOCIALADS_STACK_BASE_PORT") or DEFAULT_BASE_PORT)
        values: dict[str, Any] = {
            "state_dir": directory.expanduser().resolve(),
            "ports": Ports.from_base(base, env),
            "access_key": env.get("SOCIALADS_STACK_S3_ACCESS_KEY")
            or env.get("MINIO_ACCESS_KEY")
            or DEFAULT_ACCESS_KEY,
            "secret_key": env.get("SOCIALADS_STACK_S3_SECRET_KEY")
            or env.get("MINIO_SECRET_ACCESS_KEY")
            or DEFAULT_SECRET_KEY,
            "artifacts_bucket": env.get("SOCIALADS_ARTIFACTS_BUCKET") or "mlflow",
            "pg_dsn": env.get("SOCIALADS_STACK_PG_DSN") or DEFAULT_PG_DSN,
            "db_prefix": env.get("SOCIALADS_STACK_DB_PREFIX", ""),
            "drop_dbs": _flag(env, "SOCIALADS_STACK_DROP_DBS", False),
            "prefect_ui": _flag(env, "SOCIALADS_STACK_PREFECT_UI", True),
            "mlflow_workers": int(env.get("SOCIALADS_STACK_MLFLOW_WORKERS") or 1),
            "timeout": float(env.get("SOCIALADS_STACK_TIMEOUT") or 180),
            "grace": float(env.get("SOCIALADS_STACK_GRACE") or 15),
        }
        values.update(overrides)
        return cls(**values)

    @property
    def mlflow_db(self) -> str:
        """Name of MLflow's database."""
        return f"{self.db_prefix}mlflow"

    @property
    def prefect_db(self) -> str:
        """Name of Prefect's database."""
        return f"{self.db_prefix}prefect"

    def db_url(self, driver: str, database: str) -> str:
        """SQLAlchemy URL of ``database`` on the server of ``pg_dsn`` (query string dropped)."""
        parts = urlsplit(self.pg_dsn)
        if parts.scheme not in {"postgres", "postgresql"} or not parts.netloc:
            raise StackError(f"SOCIALADS_STACK_PG_DSN must be a postgresql:// URL: {self.pg_dsn}")
        return f"postgresql+{driver}://{parts.netloc}/{database}"

    @property
    def s3_url(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI."""
        return f"http://{self.host}:{self.ports.mlflow}"

    @property
    def prefect_api_url(self) -> str:
        """The Prefect API URL."""
        return f"http://{self.host}:{self.ports.prefect}/api"

    @property
    def s3_data_dir(self) -> Path:
        """Where SeaweedFS keeps its volumes and metadata."""
        return self.state_dir / "s3-data"

    @property
    def s3_identities_file(self) -> Path:
        """The -s3.config file: one admin identity."""
        return self.state_dir / "s3-identities.json"

    @property
    def prefect_home(self) -> Path:
        """PREFECT_HOME of the Prefect server."""
        return self.state_dir / "prefect-home"

    def mlflow_allowed_hosts(self) -> list[str]:
        """Host headers MLflow accepts: loopback on its port and the compose service name."""
        port = self.ports.mlflow
        return [
            f"{self.host}:{port}",
            f"localhost:{port}",
            self.host,
            "localhost",
            *COMPOSE_MLFLOW_HOSTS,
        ]


# -- the command lines: docker-compose.yaml mirrors these -------------------------------------
# Keep docker-compose.yaml in step with s3_command / mlflow_command / prefect_command and their
# *_env companions: compose runs the same programs with the same flags, only the host
# (0.0.0.0), the ports, the paths and the database host differ. `weed mini` also saves its
# flags to <dir>/mini.options and reloads them at start: flags given win, dropped ones linger.


def s3_identities(cfg: StackConfig) -> dict[str, Any]:
    """The -s3.config document: a single admin identity with the configured key pair."""
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": cfg.access_key, "secretKey": cfg.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def _socket_path(cfg: StackConfig, name: str) -> Path:
    """Unix socket of a weed server: in the state dir (weed leaves it behind), unless too long."""
    path = cfg.state_dir / f"{name}.sock"
    if len(str(path)) < 100:
        return path
    return Path(f"/tmp/socialads-stack-{cfg.ports.s3}-{name}.sock")


def s3_command(cfg: StackConfig) -> list[str]:
    """SeaweedFS all-in-one with every port pinned and the optional servers off."""
    p = cfg.ports
    return [
        "weed",
        "mini",
        f"-dir={cfg.s3_data_dir}",
        f"-ip={cfg.host}",
        f"-ip.bind={cfg.host}",
        f"-s3.port={p.s3}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-s3.config={cfg.s3_identities_file}",
        f"-bucket={cfg.artifacts_bucket}",
        f"-master.port={p.weed_master}",
        f"-master.port.grpc={p.weed_master_grpc}",
        f"-volume.port={p.weed_volume}",
        f"-volume.port.grpc={p.weed_volume_grpc}",
        f"-filer.port={p.weed_filer}",
        f"-filer.port.grpc={p.weed_filer_grpc}",
        f"-admin.port={p.weed_admin}",
        f"-admin.port.grpc={p.weed_admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={_socket_path(cfg, 'filer')}",
        f"-s3.localSocket={_socket_path(cfg, 's3')}",
    ]


def s3_env(cfg: StackConfig) -> dict[str, str]:
    """Extra environment of the S3 server (none: everything is on the command line)."""
    del cfg
    return {}


def mlflow_command(cfg: StackConfig) -> list[str]:
    """MLflow tracking server on PostgreSQL, proxying artifacts to the S3 bucket."""
    return [
        "mlflow",
        "server",
        "--host",
        cfg.host,
        "--port",
        str(cfg.ports.mlflow),
        "--workers",
        str(cfg.mlflow_workers),
        "--backend-store-uri",
        cfg.db_url("psycopg2", cfg.mlflow_db),
        "--artifacts-destination",
        f"s3://{cfg.artifacts_bucket}/",
        "--serve-artifacts",
        "--allowed-hosts",
        ",".join(cfg.mlflow_allowed_hosts()),
    ]


def mlflow_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of the MLflow server: the S3 endpoint and credentials of the artifacts."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "AWS_ACCESS_KEY_ID": cfg.access_key,
        "AWS_SECRET_ACCESS_KEY": cfg.secret_key,
        "AWS_DEFAULT_REGION": S3_REGION,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The GenAI job runner forks seven huey consumers; nothing here uses it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def prefect_command(cfg: StackConfig) -> list[str]:
    """Prefect server; one worker, since the default messaging broker lives in memory."""
    return [
        "prefect",
        "server",
        "start",
        "--host",
        cfg.host,
        "--port",
        str(cfg.ports.prefect),
        "--workers",
        "1",
    ]


def prefect_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of the Prefect server: its own home, its PostgreSQL database, no analytics."""
    return {
        "PREFECT_HOME": str(cfg.prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": cfg.db_url("asyncpg", cfg.prefect_db),
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if cfg.prefect_ui else "false",
        # The server builds its UI here at start (the default is inside site-packages, which
        # a server run by another user than the one who installed it cannot write).
        "PREFECT_SERVER_UI_STATIC_DIRECTORY": str(cfg.prefect_home / "ui"),
        "PREFECT_SERVER_UI_API_URL": cfg.prefect_api_url,
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


COMMANDS: dict[str, Callable[[StackConfig], list[str]]] = {
    "s3": s3_command,
    "mlflow": mlflow_command,
    "prefect": prefect_command,
}
ENVS: dict[str, Callable[[StackConfig], dict[str, str]]] = {
    "s3": s3_env,
    "mlflow": mlflow_env,
    "prefect": prefect_env,
}


def client_env(cfg: StackConfig) -> dict[str, str]:
    """What the socialads app needs to use the stack (printed by ``env``)."""
    return {
        "SOCIALADS_LAKE_URL": "s3://data",
        "SOCIALADS_ARTIFACTS_BUCKET": cfg.artifacts_bucket,
        "SOCIALADS_S3_ENDPOINT_URL": cfg.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_url,
        "AWS_ACCESS_KEY_ID": cfg.access_key,
        "AWS_SECRET_ACCESS_KEY": cfg.secret_key,
        "AWS_DEFAULT_REGION": S3_REGION,
        "MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "PREFECT_API_URL": cfg.prefect_api_url,
    }


def export_lines(env: Mapping[str, str]) -> str:
    """``export K=V`` lines for a shell to eval."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


# -- processes ---------------------------------------------------------------------------------


def _resolve(program: str) -> str:
    """The executable next to this interpreter (the venv), else on PATH."""
    found = shutil.which(program, path=str(Path(sys.executable).parent)) or shutil.which(program)
    if not found:
        raise StackError(f"{program!r} not found next to {sys.executable} nor on PATH")
    return found


def _server_env(extra: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    return {**base, **extra}


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


def _ours(record: Mapping[str, Any]) -> bool:
    """Whether the group recorded in the state is still the one we started."""
    pid = int(record["pid"])
    ticks = _start_ticks(pid)
    if ticks is not None:
        return ticks == record.get("start_ticks")
    # The leader is gone; a reused pid would have shown up above, so the rest of the
    # group (if any) is still ours.
    return bool(group_members(pid))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_ports() -> range:
    """The kernel's ephemeral (client) port range."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        low, high = "32768", "60999"
    return range(int(low), int(high) + 1)


def free_base_port(start: int = 10000, step: int = 20) -> int:
    """A base port whose whole block is free and below the ephemeral range.

    Outside the ephemeral range, a health poll of a port nobody listens on yet cannot
    connect to itself (TCP self-connect), nor can a client's socket squat a server port.
    """
    ephemeral = ephemeral_ports()
    candidates = [
        base
        for base in range(start, ephemeral.start, step)
        if not set(Ports.from_base(base, {}).all().values()) & set(ephemeral)
    ]
    if not candidates:
        raise StackError(f"no port block between {start} and the ephemeral range {ephemeral}")
    first = os.getpid() % len(candidates)
    for base in candidates[first:] + candidates[:first]:
        if all(port_free(HOST, port) for port in Ports.from_base(base, {}).all().values()):
            return base
    raise StackError(f"no free port block between {start} and {ephemeral.start}")


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False


def _s3_client(cfg: StackConfig, secret: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_url,
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key if secret is None else secret,
        region_name=S3_REGION,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )


def _s3_ready(cfg: StackConfig) -> bool:
    """S3 answers, the admin credentials work and the artifacts bucket exists."""
    if not _http_ok(f"{cfg.s3_url}/healthz"):
        return False
    from botocore.exceptions import BotoCoreError, ClientError

    client = _s3_client(cfg)
    try:
        client.head_bucket(Bucket=cfg.artifacts_bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}:
            with contextlib.suppress(ClientError):
                client.create_bucket(Bucket=cfg.artifacts_bucket)
        return False
    except BotoCoreError:
        return False
    return True


def _s3_rejects_wrong_secret(cfg: StackConfig) -> bool:
    from botocore.exceptions import ClientError

    try:
        _s3_client(cfg, secret=cfg.secret_key + "-wrong").list_buckets()
    except ClientError:
        return True
    return False


HEALTH: dict[str, Callable[[StackConfig], bool]] = {
    "s3": _s3_ready,
    "mlflow": lambda cfg: _http_ok(f"{cfg.mlflow_url}/health"),
    "prefect": lambda cfg: _http_ok(f"{cfg.prefect_api_url}/health"),
}


def health_urls(cfg: StackConfig) -> dict[str, str]:
    """The URL each service's health check starts with."""
    return {
        "s3": f"{cfg.s3_url}/healthz",
        "mlflow": f"{cfg.mlflow_url}/health",
        "prefect": f"{cfg.prefect_api_url}/health",
    }


# -- PostgreSQL --------------------------------------------------------------------------------


@contextlib.contextmanager
def _pg(dsn: str) -> Iterator[Any]:
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"PostgreSQL at {dsn} is not reachable ({str(exc).strip()}); start it, e.g. "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from exc
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def ensure_databases(cfg: StackConfig) -> list[str]:
    """Create the MLflow and Prefect databases when missing; return those created."""
    created = []
    with _pg(cfg.pg_dsn) as conn, conn.cursor() as cur:
        for name in (cfg.mlflow_db, cfg.prefect_db):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    return created


def drop_databases(dsn: str, names: list[str]) -> None:
    """Drop ``names``, closing the connections still open on them."""
    if not names:
        return
    with _pg(dsn) as conn, conn.cursor() as cur:
        for name in names:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def database_exists(dsn: str, name: str) -> bool:
    """Whether database ``name`` exists on the server of ``dsn``."""
    with _pg(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


# -- the stack ---------------------------------------------------------------------------------


class Stack:
    """Start, check and stop the three servers; the state file lets another process stop them."""

    def __init__(self, cfg: StackConfig, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.out = out if out is not None else sys.stderr
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # state ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        """The JSON file with the pids, ports and created databases."""
        return self.cfg.state_dir / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        """The recorded state, empty when nothing was started."""
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def _say(self, message: str) -> None:
        print(f"[stack] {message}", file=self.out, flush=True)

    @property
    def env(self) -> dict[str, str]:
        """The client environment of this stack."""
        return client_env(self.cfg)

    # up --------------------------------------------------------------------------------------
    def up(self, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
        """Start ``services`` (all by default), wait until healthy, return the client env."""
        cfg = self.cfg
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise StackError(f"unknown services {sorted(unknown)}; choose from {SERVICES}")
        state = self.read_state()
        if state.get("services") and self._running(state):
            if all(HEALTH[name](cfg) for name in state["services"]):
                self._say(f"already up (state in {self.state_path})")
                return self.env
            raise StackError(f"a stack from {self.state_path} is half running: run `down` first")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        wanted = cfg.ports.of(services)
        busy = {n: p for n, p in wanted.items() if not port_free(cfg.host, p)}
        if busy:
            raise StackError(f"ports already in use: {busy}; choose another --base-port")
        ephemeral = ephemeral_ports()
        risky = {n: p for n, p in wanted.items() if p in ephemeral}
        if risky:
            self._say(f"warning: ports in the ephemeral range {ephemeral}: {risky}")
        started = time.monotonic()
        created = ensure_databases(cfg) if {"mlflow", "prefect"} & set(services) else []
        if created:
            self._say(f"created databases {', '.join(created)}")
        # Databases an earlier `up` here created stay "ours" for a later `down --drop-dbs`.
        ours = {cfg.mlflow_db, cfg.prefect_db}
        created = sorted(ours & {*created, *state.get("created_databases", [])})
        state = {
            "ports": cfg.ports.all(),
            "pg_dsn": cfg.pg_dsn,
            "databases": [cfg.mlflow_db, cfg.prefect_db],
            "created_databases": created,
            "drop_databases": cfg.drop_dbs,
            "env": self.env,
            "services": {},
        }
        self._write_state(state)
        try:
            if "s3" in services:
                self._write_identities()
                self._start("s3", state)
                self._wait({"s3"})
                if not _s3_rejects_wrong_secret(cfg):
                    raise StackError("S3 accepts a wrong secret: the identities were not loaded")
            # MLflow needs S3 only when artifacts move, so both Python servers start together.
            servers = [name for name in ("mlflow", "prefect") if name in services]
            for name in servers:
                self._start(name, state)
            self._wait(set(servers))
        except BaseException:
            self._say("start failed, stopping what was started")
            self.down()
            raise
        state["timings"] = self.timings
        self._write_state(state)
        self._say(f"up in {time.monotonic() - started:.1f}s, state in {self.state_path}")
        return self.env

    def _write_identities(self) -> None:
        path = self.cfg.s3_identities_file
        path.write_text(json.dumps(s3_identities(self.cfg), indent=2))
        path.chmod(0o600)

    def _start(self, name: str, state: dict[str, Any]) -> None:
        argv = COMMANDS[name](self.cfg)
        argv = [_resolve(argv[0]), *argv[1:]]
        workdir = self.cfg.state_dir / name
        workdir.mkdir(parents=True, exist_ok=True)
        if name == "s3":
            self.cfg.s3_data_dir.mkdir(parents=True, exist_ok=True)
        if name == "prefect":
            self.cfg.prefect_home.mkdir(parents=True, exist_ok=True)
        log_path = self.cfg.state_dir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=_server_env(ENVS[name](self.cfg)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[name] = proc
        state["services"][name] = {
            "pid": proc.pid,
            "start_ticks": _start_ticks(proc.pid),
            "started_at": time.time(),
            "log": str(log_path),
            "argv": argv,
        }
        self._write_state(state)
        self._say(f"{name:<8} started pid {proc.pid}, log {log_path}")

    def _wait(self, names: set[str]) -> None:
        """Poll the health of ``names`` together until all pass; fail fast on exit/timeout."""
        pending = set(names)
        begun = {name: time.monotonic() for name in names}
        while pending:
            for name in sorted(pending):
                proc = self._procs[name]
                log = self.cfg.state_dir / f"{name}.log"
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with code {proc.returncode} before it was healthy; "
                        f"last lines of {log}:\n{_tail(log)}"
                    )
                elapsed = time.monotonic() - begun[name]
                if HEALTH[name](self.cfg):
                    self.timings[name] = round(elapsed, 2)
                    pending.discard(name)
                    url = health_urls(self.cfg)[name]
                    self._say(f"{name:<8} healthy in {elapsed:5.1f}s  ({url})")
                elif elapsed > self.cfg.timeout:
                    raise StackError(
                        f"{name} not healthy after {self.cfg.timeout:.0f}s "
                        f"({health_urls(self.cfg)[name]}); last lines of {log}:\n{_tail(log)}"
                    )
            if pending:
                time.sleep(0.2)

    # down ------------------------------------------------------------------------------------
    @staticmethod
    def _running(state: Mapping[str, Any]) -> bool:
        return any(_ours(rec) for rec in state.get("services", {}).values())

    def is_running(self) -> bool:
        """Whether any process recorded in the state dir still runs."""
        return self._running(self.read_state())

    def down(self, drop_dbs: bool | None = None) -> None:
        """SIGTERM the groups started by ``up``, SIGKILL after the grace period, drop DBs."""
        state = self.read_state()
        records = state.get("services", {})
        groups = {name: int(rec["pid"]) for name, rec in records.items() if _ours(rec)}
        for name in reversed(SERVICES):
            if name in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(groups[name], signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.grace
        while time.monotonic() < deadline and any(group_members(g) for g in groups.values()):
            self._reap()
            time.sleep(0.2)
        for name, pgid in groups.items():
            if group_members(pgid):
                self._say(f"{name} still running {self.cfg.grace:g}s after SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        self._reap(block=True)
        for name in groups:
            self._say(f"{name:<8} stopped")
        drop = state.get("drop_databases", False) if drop_dbs is None else drop_dbs
        created = state.get("created_databases", [])
        if drop and created:
            drop_databases(state.get("pg_dsn", self.cfg.pg_dsn), created)
            self._say(f"dropped databases {', '.join(created)}")
            created = []
        if state:
            state["services"] = {}
            state["created_databases"] = created
            self._write_state(state)

    def _reap(self, block: bool = False) -> None:
        for proc in self._procs.values():
            if block:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            else:
                proc.poll()

    # status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """Per service: pid, whether it runs and whether its health check passes."""
        records = self.read_state().get("services", {})
        result: dict[str, dict[str, Any]] = {}
        for name in SERVICES:
            rec = records.get(name)
            running = bool(rec) and _ours(rec)
            result[name] = {
                "pid": rec["pid"] if rec else None,
                "running": running,
                "healthy": HEALTH[name](self.cfg) if running else False,
                "url": health_urls(self.cfg)[name],
            }
        return result


# -- CLI ---------------------------------------------------------------------------------------


def _config_from_state(cfg: StackConfig) -> StackConfig:
    """``cfg`` with the ports, keys and DSN recorded by ``up`` in its state dir."""
    try:
        state = json.loads((cfg.state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return cfg
    ports = {k: v for k, v in state.get("ports", {}).items() if k != "weed_admin_grpc"}
    env = state.get("env", {})
    return dataclasses.replace(
        cfg,
        ports=Ports(**ports) if ports else cfg.ports,
        access_key=env.get("AWS_ACCESS_KEY_ID", cfg.access_key),
        secret_key=env.get("AWS_SECRET_ACCESS_KEY", cfg.secret_key),
        artifacts_bucket=env.get("SOCIALADS_ARTIFACTS_BUCKET", cfg.artifacts_bucket),
        pg_dsn=state.get("pg_dsn", cfg.pg_dsn),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python scripts/stack.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    parser.add_argument("--dir", help=f"state dir (default $SOCIALADS_STACK_DIR or {DEFAULT_DIR})")
    parser.add_argument("--base-port", type=int, help="first port (default 19000)")
    parser.add_argument("--db-prefix", help="prefix of the database names")
    parser.add_argument(
        "--drop-dbs", action="store_true", help="down: drop the databases that up created"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.db_prefix is not None:
        overrides["db_prefix"] = args.db_prefix
    if args.drop_dbs:
        overrides["drop_dbs"] = True
    cfg = StackConfig.from_env(state_dir=args.dir, base_port=args.base_port, **overrides)
    # Talk to what actually runs: reuse the ports and keys recorded by `up`.
    if args.base_port is None and (args.command != "up" or Stack(cfg).is_running()):
        cfg = _config_from_state(cfg)
    stack = Stack(cfg)
    try:
        if args.command == "up":
            sys.stdout.write(export_lines(stack.up()))
        elif args.command == "down":
            stack.down(drop_dbs=True if args.drop_dbs else None)
        elif args.command == "env":
            sys.stdout.write(export_lines(stack.env))
        else:
            report = stack.status()
            for name, info in report.items():
                state = "healthy" if info["healthy"] else "running" if info["running"] else "down"
                print(f"{name:<8} {state:<8} pid={info['pid']}  {info['url']}")
            return 0 if all(info["healthy"] for info in report.values()) else 1
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The native stack: natively, on loopback, what docker compose runs (S3, MLflow, Prefect).

``Stack(StackConfig.from_env(os.environ, ...)).up()`` creates the two databases on the
PostgreSQL of ``pg_dsn`` when missing (PostgreSQL itself is the machine's: it is checked, not
started), starts the servers of :mod:`socialads.local.servers`, waits until each is healthy
and returns the client environment; ``.down()`` stops what ``up`` started, also from another
process (the state file in the state dir). ``python scripts/stack.py`` is the command line.

Ports are a base port (default 19000) plus a fixed offset, each overridable
(``SOCIALADS_STACK_<NAME>_PORT``, names as in :class:`Ports`). Keep every port, admin+10000
included (so base <= 22750), below the kernel's ephemeral range (32768-60999 here): there a
health poll of a not-yet-listening port can connect to itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

from socialads.errors import ServiceError
from socialads.local import servers, supervisor
from socialads.local.servers import S3_REGION, SeaweedPorts
from socialads.local.supervisor import HOST, Launched, ProcessRecord, Service

DEFAULT_BASE_PORT = 19000
DEFAULT_DIR = ".socialads/stack"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_ACCESS_KEY = "minio"
DEFAULT_SECRET_KEY = "minio123"  # pragma: allowlist secret (documented dev default)
STATE_FILE = "state.json"
SERVICES: tuple[str, ...] = ("s3", "mlflow", "prefect")
# The compose service name/port (.env.example MLFLOW_HOST, MLFLOW_PORT) other containers use;
# MLflow checks the Host header.
COMPOSE_MLFLOW_HOSTS: tuple[str, ...] = ("mlflow:5001", "mlflow")


# -- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ports:
    """Every TCP port the stack listens on (all on 127.0.0.1), in the order of their offsets."""

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
    def weed(self) -> SeaweedPorts:
        """The ports of the S3 server."""
        return SeaweedPorts(
            s3=self.s3,
            s3_grpc=self.s3_grpc,
            master=self.weed_master,
            master_grpc=self.weed_master_grpc,
            volume=self.weed_volume,
            volume_grpc=self.weed_volume_grpc,
            filer=self.weed_filer,
            filer_grpc=self.weed_filer_grpc,
            admin=self.weed_admin,
        )

    @classmethod
    def from_base(cls, base: int, environ: Mapping[str, str]) -> Ports:
        """Ports at fixed offsets from ``base``, each overridable by its env var."""
        values = {}
        for offset, field in enumerate(dataclasses.fields(cls)):
            override = environ.get(f"SOCIALADS_STACK_{field.name.upper()}_PORT")
            values[field.name] = int(override) if override else base + offset
        return cls(**values)

    def all(self) -> dict[str, int]:
        """Name → port of every listening port, the derived admin gRPC one included."""
        return {**dataclasses.asdict(self), "weed_admin_grpc": self.weed.admin_grpc}

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
    """Everything the stack needs; ``from_env`` reads the ``SOCIALADS_STACK_*`` variables."""

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
        environ: Mapping[str, str],
        state_dir: str | Path | None = None,
        base_port: int | None = None,
        **overrides: Any,
    ) -> StackConfig:
        """Build from arguments, then the variables in ``environ``, then defaults."""
        env = environ
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

    def recorded(self) -> StackConfig:
        """This config with the ports, keys and DSN that ``up`` recorded in the state dir."""
        state = supervisor.read_state(self.state_dir / STATE_FILE)
        ports = {k: v for k, v in state.get("ports", {}).items() if k != "weed_admin_grpc"}
        env = state.get("env", {})
        return dataclasses.replace(
            self,
            ports=Ports(**ports) if ports else self.ports,
            access_key=env.get("AWS_ACCESS_KEY_ID", self.access_key),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", self.secret_key),
            artifacts_bucket=env.get("SOCIALADS_ARTIFACTS_BUCKET", self.artifacts_bucket),
            pg_dsn=state.get("pg_dsn", self.pg_dsn),
        )

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
            raise ServiceError(
                f"SOCIALADS_STACK_PG_DSN must be a postgresql:// URL: {self.pg_dsn}",
                service="postgresql",
            )
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


def declare(cfg: StackConfig) -> dict[str, Service]:
    """The stack's servers as ``cfg`` configures them, by name."""
    return {
        "s3": servers.seaweedfs(
            host=cfg.host,
            ports=cfg.ports.weed,
            data_dir=cfg.s3_data_dir,
            identities_file=cfg.s3_identities_file,
            bucket=cfg.artifacts_bucket,
            access_key=cfg.access_key,
            secret_key=cfg.secret_key,
            socket_dir=cfg.state_dir,
        ),
        "mlflow": servers.mlflow_server(
            host=cfg.host,
            port=cfg.ports.mlflow,
            workers=cfg.mlflow_workers,
            backend_store_uri=cfg.db_url("psycopg2", cfg.mlflow_db),
            artifacts_bucket=cfg.artifacts_bucket,
            allowed_hosts=cfg.mlflow_allowed_hosts(),
            s3_endpoint=cfg.s3_url,
            access_key=cfg.access_key,
            secret_key=cfg.secret_key,
        ),
        "prefect": servers.prefect_server(
            home=cfg.prefect_home,
            host=cfg.host,
            port=cfg.ports.prefect,
            database_url=cfg.db_url("asyncpg", cfg.prefect_db),
            ui=cfg.prefect_ui,
        ),
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


def free_base_port(start: int = 10000, step: int = 20) -> int:
    """A base port whose whole block is free and below the ephemeral range."""
    ephemeral = supervisor.ephemeral_ports()
    candidates = [
        base
        for base in range(start, ephemeral.start, step)
        if not set(Ports.from_base(base, {}).all().values()) & set(ephemeral)
    ]
    first = time.monotonic_ns() % max(len(candidates), 1)
    for base in candidates[first:] + candidates[:first]:
        if all(supervisor.port_free(HOST, p) for p in Ports.from_base(base, {}).all().values()):
            return base
    raise ServiceError(
        f"no free port block between {start} and the ephemeral range {ephemeral}", service="ports"
    )


# -- PostgreSQL (the machine's: checked, not started) -----------------------------------------


@contextlib.contextmanager
def _pg(dsn: str) -> Iterator[Any]:
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceError(
            f"PostgreSQL at {dsn} is not reachable ({str(exc).strip()}); start it, e.g. "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            service="postgresql",
        ) from exc
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def ensure_databases(dsn: str, names: Iterable[str]) -> list[str]:
    """Create the databases ``names`` on the server of ``dsn`` when missing; those created."""
    created = []
    with _pg(dsn) as conn, conn.cursor() as cur:
        for name in names:
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
    """Start, check and stop the stack's servers; the state file lets another process stop
    them. Progress goes to ``out`` (stderr by default)."""

    def __init__(self, cfg: StackConfig, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.out = out if out is not None else sys.stderr
        self.timings: dict[str, float] = {}
        self._launched: dict[str, Launched] = {}

    @property
    def state_path(self) -> Path:
        """The JSON file with the pids, ports and created databases."""
        return self.cfg.state_dir / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        """The recorded state, empty when nothing was started (or the file is damaged)."""
        return supervisor.read_state(self.state_path)

    def _records(self, state: Mapping[str, Any]) -> dict[str, ProcessRecord]:
        records = {
            name: ProcessRecord.from_json(data) for name, data in state.get("services", {}).items()
        }
        return {name: rec for name, rec in records.items() if rec is not None}

    def _say(self, message: str) -> None:
        print(f"[stack] {message}", file=self.out, flush=True)

    @property
    def env(self) -> dict[str, str]:
        """The client environment of this stack."""
        return client_env(self.cfg)

    def is_running(self) -> bool:
        """Whether any server recorded in the state dir still runs."""
        return any(rec.running() for rec in self._records(self.read_state()).values())

    # up --------------------------------------------------------------------------------------
    def up(self, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
        """Start ``services`` (all by default), wait until healthy, return the client env.

        Raises :class:`ServiceError`; what was started is stopped again first.
        """
        cfg = self.cfg
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ServiceError(
                f"unknown services {sorted(unknown)}; choose from {SERVICES}", service="stack"
            )
        declared = declare(cfg)
        state = self.read_state()
        if self.is_running():
            if all(declared[name].health() for name in state.get("services", {})):
                self._say(f"already up (state in {self.state_path})")
                return self.env
            raise ServiceError(
                f"a stack from {self.state_path} is half running: run `down` first",
                service="stack",
            )
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        wanted = cfg.ports.of(services)
        busy = {n: p for n, p in wanted.items() if not supervisor.port_free(cfg.host, p)}
        if busy:
            raise ServiceError(
                f"ports already in use: {busy}; choose another --base-port", service="stack"
            )
        ephemeral = supervisor.ephemeral_ports()
        risky = {n: p for n, p in wanted.items() if p in ephemeral}
        if risky:
            self._say(f"warning: ports in the ephemeral range {ephemeral}: {risky}")
        started = time.monotonic()
        ours = [cfg.mlflow_db, cfg.prefect_db]
        created = ensure_databases(cfg.pg_dsn, ours) if {"mlflow", "prefect"} & {*services} else []
        if created:
            self._say(f"created databases {', '.join(created)}")
        # Databases an earlier `up` here created stay "ours" for a later `down --drop-dbs`.
        state = {
            "ports": cfg.ports.all(),
            "pg_dsn": cfg.pg_dsn,
            "databases": ours,
            "created_databases": sorted(
                set(ours) & {*created, *state.get("created_databases", [])}
            ),
            "drop_databases": cfg.drop_dbs,
            "env": self.env,
            "services": {},
        }
        supervisor.write_state(self.state_path, state)
        try:
            if "s3" in services:
                self._write_identities()
                self._wait([self._start(declared["s3"], state)])
                if not servers.s3_rejects_wrong_secret(cfg.s3_url, cfg.access_key, cfg.secret_key):
                    raise ServiceError(
                        "S3 accepts a wrong secret: the identities were not loaded", service="s3"
                    )
            # MLflow needs S3 only when artifacts move, so both Python servers start together.
            self._wait(
                [self._start(declared[n], state) for n in ("mlflow", "prefect") if n in services]
            )
        except BaseException:
            self._say("start failed, stopping what was started")
            self.down()
            raise
        state["timings"] = self.timings
        supervisor.write_state(self.state_path, state)
        self._say(f"up in {time.monotonic() - started:.1f}s, state in {self.state_path}")
        return self.env

    def _write_identities(self) -> None:
        path = self.cfg.s3_identities_file
        document = servers.s3_identities(self.cfg.access_key, self.cfg.secret_key)
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)

    def _start(self, service: Service, state: dict[str, Any]) -> Launched:
        log = self.cfg.state_dir / f"{service.name}.log"
        item = supervisor.launch(service, log=log, cwd=self.cfg.state_dir / service.name)
        self._launched[service.name] = item
        state["services"][service.name] = item.record.to_json()
        supervisor.write_state(self.state_path, state)
        self._say(f"{service.name:<8} started pid {item.record.pid}, log {log}")
        return item

    def _wait(self, launched: list[Launched]) -> None:
        def healthy(item: Launched, seconds: float) -> None:
            self._say(
                f"{item.service.name:<8} healthy in {seconds:5.1f}s  ({item.service.health_url})"
            )

        self.timings.update(supervisor.wait_healthy(launched, self.cfg.timeout, healthy))

    # down ------------------------------------------------------------------------------------
    def down(self, drop_dbs: bool | None = None) -> None:
        """Stop the servers ``up`` started (SIGTERM, SIGKILL after the grace period); drop the
        databases it created if asked (here or at ``up``)."""
        state = self.read_state()
        records = self._records(state)
        ordered = {name: records[name] for name in reversed(SERVICES) if name in records}
        stopped = supervisor.stop(ordered, self.cfg.grace, self._say)
        for item in self._launched.values():
            item.process.poll()  # reap the children of this process
        for name in stopped:
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
            supervisor.write_state(self.state_path, state)

    # status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """Per service: pid, whether it runs and whether its health check passes."""
        records = self._records(self.read_state())
        declared = declare(self.cfg)
        result: dict[str, dict[str, Any]] = {}
        for name in SERVICES:
            rec = records.get(name)
            running = rec is not None and rec.running()
            result[name] = {
                "pid": rec.pid if rec else None,
                "running": running,
                "healthy": declared[name].health() if running else False,
                "url": declared[name].health_url,
            }
        return result

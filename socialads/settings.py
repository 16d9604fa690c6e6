"""The one settings object of socialads.

Built once per process at an edge (CLI callback, API lifespan, flow entry) and passed down.
Canonical names carry the ``SOCIALADS_`` prefix; the standard variables of the tools
(``MLFLOW_TRACKING_URI``, ``AWS_ACCESS_KEY_ID``, ``PREFECT_API_URL``, ...) and the original
project's ``.env`` names (``MINIO_ACCESS_KEY``, ``DATA_REPO_BUCKET_NAME``, ...) are honoured too.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from platformdirs import user_data_path
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SelectionMetric = Literal["f1", "accuracy", "precision", "recall", "roc_auc"]
CandidateName = Literal[
    "logistic_regression", "gaussian_nb", "knn", "svm_rbf", "random_forest", "gradient_boosting"
]
CANDIDATE_NAMES: tuple[CandidateName, ...] = get_args(CandidateName)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def default_home() -> Path:
    """Where the embedded default keeps its lake, MLflow store and Prefect home."""
    return user_data_path("socialads", appauthor=False)


class Settings(BaseSettings):
    """Every knob of socialads, read from the environment and a ``.env`` file."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # -- where things live -------------------------------------------------------------------
    home: Path = Field(
        default_factory=default_home,
        validation_alias=_env("SOCIALADS_HOME"),
        description="Folder of the embedded default (local lake, MLflow store, Prefect home).",
    )
    lake_url: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_LAKE_URL"),
        description="fsspec URL of the data lake: file:///path or s3://bucket. "
        "Default: s3://$DATA_REPO_BUCKET_NAME when that is set, else <home>/lake.",
    )
    data_bucket: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_DATA_BUCKET", "DATA_REPO_BUCKET_NAME"),
        description="Bucket of the lake on S3 (original name: DATA_REPO_BUCKET_NAME).",
    )
    artifacts_bucket: str = Field(
        default="mlflow",
        validation_alias=_env("SOCIALADS_ARTIFACTS_BUCKET"),
        description="Bucket MLflow keeps artifacts in; created by `socialads lake init`.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=_env(
            "SOCIALADS_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"
        ),
        description="S3 endpoint (MinIO): http://s3:9000 in compose.",
    )
    s3_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY"),
    )
    s3_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env(
            "SOCIALADS_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_ACCESS_KEY"
        ),
    )
    s3_region: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_S3_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region; MinIO and most stand-ins need none.",
    )
    processed_keep: int = Field(
        default=5,
        ge=1,
        le=1000,
        validation_alias=_env("SOCIALADS_PROCESSED_KEEP"),
        description="Data-prep runs kept under the lake's processed/ (the current one "
        "included), for lineage; older ones are removed after each run.",
    )
    raw_dataset: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_RAW_DATASET"),
        description="The raw dataset data-prep trains on: a lake key (raw/big.parquet) or a "
        "URL or absolute path of a CSV file, a Parquet file or a folder of Parquet files "
        "(`socialads data synth` writes one). Default: the lake's raw/Social_Network_Ads.csv.",
    )
    io_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        validation_alias=_env("SOCIALADS_IO_RETRIES"),
        description="Retries of lake and registry I/O on transient errors.",
    )

    # -- MLflow ------------------------------------------------------------------------------
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server. Default: SQLite store under <home>/mlflow.",
    )
    mlflow_http_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        validation_alias=_env("SOCIALADS_MLFLOW_HTTP_RETRIES"),
        description="Retries of each request to an MLflow server (MLflow's own default, 7 "
        "with exponential back-off, makes a dead server take minutes to report).",
    )
    experiment_name: str = Field(
        default="Social_Network_Ads_Experiment",
        validation_alias=_env("SOCIALADS_EXPERIMENT_NAME"),
    )
    model_name: str = Field(
        default="SocialNetworkAdsModel",
        validation_alias=_env("SOCIALADS_MODEL_NAME"),
    )
    champion_alias: str = Field(
        default="champion", validation_alias=_env("SOCIALADS_CHAMPION_ALIAS")
    )
    challenger_alias: str = Field(
        default="challenger", validation_alias=_env("SOCIALADS_CHALLENGER_ALIAS")
    )

    # -- training ----------------------------------------------------------------------------
    test_size: float = Field(
        default=0.2,
        ge=0.05,
        le=0.5,
        validation_alias=_env("SOCIALADS_TEST_SIZE"),
        description="Holdout share of the stratified split.",
    )
    random_state: int = Field(default=42, validation_alias=_env("SOCIALADS_RANDOM_STATE"))
    cv_folds: int = Field(default=5, ge=2, le=20, validation_alias=_env("SOCIALADS_CV_FOLDS"))
    selection_metric: SelectionMetric = Field(
        default="f1", validation_alias=_env("SOCIALADS_SELECTION_METRIC")
    )
    candidates: Annotated[list[CandidateName], NoDecode] = Field(
        default_factory=lambda: list(CANDIDATE_NAMES),
        validation_alias=_env("SOCIALADS_CANDIDATES"),
        description="Comma-separated candidate families to search.",
    )
    n_jobs: int = Field(default=1, validation_alias=_env("SOCIALADS_N_JOBS"))
    dask_address: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_DASK_ADDRESS"),
        description="Dask scheduler (e.g. tcp://scheduler:8786) the training searches its "
        "candidates on, their CV fits spread over its workers; unset: in the flow's process.",
    )
    search_max_rows: int = Field(
        default=5_000,
        ge=100,
        validation_alias=_env("SOCIALADS_SEARCH_MAX_ROWS"),
        description="Candidates whose cost grows faster than the rows (knn, svm_rbf) are "
        "searched and fitted on a stratified, seeded subsample of this many training rows "
        "when the training split is larger; the others use every row.",
    )
    train_with_production: bool = Field(
        default=True,
        validation_alias=_env("SOCIALADS_TRAIN_WITH_PRODUCTION"),
        description="Data-prep adds the labelled production rows (prediction log ⨝ "
        "feedback) to the training split; the holdout stays the raw data's.",
    )

    # -- Prefect -----------------------------------------------------------------------------
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_PREFECT_API_URL", "PREFECT_API_URL"),
        description="Prefect server API. Default: a local server under <home>/prefect.",
    )
    pipeline_cron: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_PIPELINE_CRON"),
        description="Cron schedule of the `pipeline` deployment; off when unset.",
    )

    # -- serving -----------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", validation_alias=_env("SOCIALADS_API_HOST"))
    api_port: int = Field(default=8800, ge=1, le=65535, validation_alias=_env("SOCIALADS_API_PORT"))
    api_workers: int = Field(default=1, ge=1, le=64, validation_alias=_env("SOCIALADS_API_WORKERS"))
    api_key: SecretStr | None = Field(default=None, validation_alias=_env("SOCIALADS_API_KEY"))
    reload_interval: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("SOCIALADS_RELOAD_INTERVAL"),
        description="Seconds between checks of the champion alias by the API.",
    )
    batch_max_records: int = Field(
        default=1000, ge=1, le=100_000, validation_alias=_env("SOCIALADS_BATCH_MAX_RECORDS")
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, validation_alias=_env("SOCIALADS_MAX_BODY_BYTES")
    )
    onnx_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=_env("SOCIALADS_ONNX_THREADS"),
        description="Intra-op threads of each ONNX Runtime session (one record needs one).",
    )
    require_model_at_start: bool = Field(
        default=False,
        validation_alias=_env("SOCIALADS_REQUIRE_MODEL_AT_START"),
        description="Exit at start when no champion can be loaded, instead of retrying.",
    )

    # -- the production loop -----------------------------------------------------------------
    prediction_log: bool = Field(
        default=True,
        validation_alias=_env("SOCIALADS_PREDICTION_LOG"),
        description="Record every prediction (API and `socialads score`) in the lake's "
        "predictions/; false turns the log off.",
    )
    prediction_log_flush_rows: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        validation_alias=_env("SOCIALADS_PREDICTION_LOG_FLUSH_ROWS"),
        description="The API writes a part file as soon as this many predictions wait.",
    )
    prediction_log_flush_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        validation_alias=_env("SOCIALADS_PREDICTION_LOG_FLUSH_SECONDS"),
        description="... and at least this often; a `kill -9` loses at most this window.",
    )
    prediction_log_max_buffered: int = Field(
        default=100_000,
        ge=1,
        validation_alias=_env("SOCIALADS_PREDICTION_LOG_MAX_BUFFERED"),
        description="Predictions kept in memory while the lake is unreachable; beyond "
        "that they are dropped and counted (socialads_prediction_log_dropped_total).",
    )
    score_chunk_rows: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        validation_alias=_env("SOCIALADS_SCORE_CHUNK_ROWS"),
        description="Rows `socialads score` reads, checks and scores at a time (bounds memory).",
    )
    score_cron: str | None = Field(
        default=None,
        validation_alias=_env("SOCIALADS_SCORE_CRON"),
        description="Cron schedule of the `score` deployment (scores incoming/); off when unset.",
    )

    # -- monitoring ---------------------------------------------------------------------------
    monitor_window: timedelta = Field(
        default=timedelta(hours=24),
        validation_alias=_env("SOCIALADS_MONITOR_WINDOW"),
        description="How far back `socialads monitor` and the monitor flow look by default "
        "(e.g. 24h, 90m, 7d).",
    )
    monitor_min_rows: int = Field(
        default=100,
        ge=1,
        validation_alias=_env("SOCIALADS_MONITOR_MIN_ROWS"),
        description="Fewer predictions than this in the window: no verdict, no report.",
    )
    monitor_drift_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        validation_alias=_env("SOCIALADS_MONITOR_DRIFT_SHARE"),
        description="The window has drifted when at least this share of the features "
        "(Gender, Age, EstimatedSalary) drifted (Evidently's dataset-drift rule).",
    )
    monitor_min_labelled: int = Field(
        default=50,
        ge=1,
        validation_alias=_env("SOCIALADS_MONITOR_MIN_LABELLED"),
        description="Live quality (accuracy, F1, ...) is computed from this many labelled "
        "predictions of the window on.",
    )
    monitor_f1_floor: float = Field(
        default=0.7,
        ge=0,
        le=1,
        validation_alias=_env("SOCIALADS_MONITOR_F1_FLOOR"),
        description="Live F1 under this floor counts as degraded (retraining is due).",
    )
    monitor_cooldown: timedelta = Field(
        default=timedelta(hours=6),
        validation_alias=_env("SOCIALADS_MONITOR_COOLDOWN"),
        description="At most one drift-triggered pipeline run per cool-down (the "
        "automation `socialads deploy` creates).",
    )
    monitor_cron: str | None = Field(
        default="0 * * * *",
        validation_alias=_env("SOCIALADS_MONITOR_CRON"),
        description="Cron schedule of the `monitor` deployment (hourly); empty turns it off.",
    )
    monitoring_experiment: str = Field(
        default="socialads-monitoring",
        validation_alias=_env("SOCIALADS_MONITORING_EXPERIMENT"),
        description="MLflow experiment of the monitoring runs (reports and headline numbers).",
    )

    @field_validator("monitor_window", "monitor_cooldown", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().upper().startswith("P"):  # ISO 8601 as is
            return parse_duration(value)
        return value

    @field_validator("monitor_window")
    @classmethod
    def _positive_window(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the window must be longer than zero")
        return value

    @field_validator("dask_address", mode="before")
    @classmethod
    def _scheduler_address(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", value):
                raise ValueError(
                    f"not a Dask scheduler address: {value!r} (e.g. tcp://127.0.0.1:8786)"
                )
        return value

    @field_validator("monitor_cron", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("candidates", mode="before")
    @classmethod
    def _split_candidates(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            unknown = sorted({str(v) for v in value} - set(CANDIDATE_NAMES))
            if unknown:
                raise ValueError(
                    f"unknown candidates {unknown}; choose from {list(CANDIDATE_NAMES)}"
                )
            if not value:
                raise ValueError("at least one candidate is needed")
        return value

    @field_validator("raw_dataset", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> Settings:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError(
                "S3 credentials come in pairs: set both the access key and the secret key "
                "(SOCIALADS_S3_ACCESS_KEY/SOCIALADS_S3_SECRET_KEY or MINIO_ACCESS_KEY/"
                "MINIO_SECRET_ACCESS_KEY)"
            )
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def lake(self) -> str:
        """The lake's fsspec URL, resolved from the settings above."""
        if self.lake_url:
            return self.lake_url.rstrip("/")
        if self.data_bucket:
            return f"s3://{self.data_bucket}"
        return (self.home / "lake").as_uri()

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking (and registry) URI."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str | None:
        """Artifact root for experiments created by the embedded default (None for servers)."""
        if self.tracking_uri:
            return None
        return (self.home / "mlflow" / "artifacts").as_uri()

    @property
    def prefect_home(self) -> Path:
        """PREFECT_HOME of the embedded default."""
        return self.home / "prefect"

    def storage_options(self, url: str | None = None) -> dict[str, object]:
        """fsspec options for ``url`` (the lake by default): endpoint and credentials for s3."""
        target = url or self.lake
        if not target.startswith(("s3://", "s3a://")):
            return {}
        options: dict[str, object] = {}
        client_kwargs: dict[str, object] = {}
        if self.s3_region:
            client_kwargs["region_name"] = self.s3_region
        if self.s3_endpoint_url:
            client_kwargs["endpoint_url"] = self.s3_endpoint_url
        options["client_kwargs"] = client_kwargs
        if self.s3_access_key is not None and self.s3_secret_key is not None:
            options["key"] = self.s3_access_key.get_secret_value()
            options["secret"] = self.s3_secret_key.get_secret_value()
        # Bounded retries: a wrong endpoint must fail in seconds, not minutes.
        options["config_kwargs"] = {
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        return options

    def describe(self) -> dict[str, str]:
        """A secret-free summary for logs and `socialads info`."""
        return {
            "home": str(self.home),
            "lake": self.lake,
            "s3_endpoint": self.s3_endpoint_url or "-",
            "mlflow": self.mlflow_uri,
            "experiment": self.experiment_name,
            "model": self.model_name,
            "prefect_api": self.prefect_api_url or f"local server under {self.prefect_home}",
        }


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``24h``, ``90m``, ``7d``, ``30s``, ``2w`` as a timedelta; ValueError otherwise."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (a number and s, m, h, d or w, e.g. 24h)")
    number, unit = match.groups()
    return timedelta(**{_UNITS[unit.lower()]: float(number)})


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and ``.env``), with explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]


def settings_with(**fields: Any) -> Settings:
    """The settings from the environment (and ``.env``), with the non-None ``fields`` (by
    field name: ``test_size=0.3``) in place of what the environment says."""
    return load_settings(
        **{env_names(key)[0]: value for key, value in fields.items() if value is not None}
    )


def env_names(field: str) -> tuple[str, ...]:
    """The environment variables ``Settings.<field>`` reads, the ``SOCIALADS_`` one first."""
    alias = Settings.model_fields[field].validation_alias
    if not isinstance(alias, AliasChoices):
        raise TypeError(f"settings field {field!r} declares no environment names")
    return tuple(str(choice) for choice in alias.choices)


def closed_bounds(field: str) -> dict[str, float]:
    """``min``/``max`` of ``Settings.<field>`` from its ``ge``/``le`` constraints, for the
    command line's options (``gt``/``lt`` have no command-line counterpart and are left to
    the settings' own validation)."""
    import annotated_types

    bounds: dict[str, float] = {}
    for constraint in Settings.model_fields[field].metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds["min"] = constraint.ge  # type: ignore[assignment]
        elif isinstance(constraint, annotated_types.Le):
            bounds["max"] = constraint.le  # type: ignore[assignment]
    return bounds


def option_for(field: str, text: str) -> dict[str, Any]:
    """Keyword arguments of the command-line option that overrides ``Settings.<field>``: its
    help (``text``, then the environment variable and the default, both from the field) and
    its closed bounds (:func:`closed_bounds`)."""
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if default is None:
        shown = "none"
    elif isinstance(default, list):
        shown = ",".join(map(str, default))
    elif isinstance(default, float):
        shown = f"{default:g}"
    elif isinstance(default, timedelta):
        seconds = int(default.total_seconds())
        units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
        # Days from two on (24h reads better than 1d).
        unit, size = next(
            (u, n) for u, n in units if seconds % n == 0 and (u != "d" or seconds >= 2 * n)
        )
        shown = f"{seconds // size}{unit}"
    else:
        shown = str(default)
    return {"help": f"{text} (env {env_names(field)[0]}, default {shown})", **closed_bounds(field)}


def describe_problems(exc: ValidationError) -> str:
    """One line naming every invalid setting, e.g. ``SOCIALADS_API_PORT: Input should ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )

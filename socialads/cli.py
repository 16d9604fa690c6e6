"""The `socialads` command line: train, predict, serve, deploy and the lake.

Every command builds the settings once (in the callback) and translates the library's
errors into a one-line message and an exit code; ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from socialads.data.schema import AGE, BOUNDS, GENDERS, SALARY
from socialads.errors import SocialAdsError
from socialads.settings import SelectionMetric, option_for

LOCAL_CLUSTER = "local"
"""`socialads train --dask local`: a temporary Dask cluster on this machine."""

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from socialads.settings import Settings

ENV_HELP = """
Settings come from the environment and a .env file in the working directory. The ones that
matter most: SOCIALADS_HOME (embedded default's folder), SOCIALADS_LAKE_URL (file:// or
s3://bucket), SOCIALADS_S3_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID /
MINIO_ACCESS_KEY, AWS_SECRET_ACCESS_KEY / MINIO_SECRET_ACCESS_KEY, MLFLOW_TRACKING_URI,
PREFECT_API_URL, SOCIALADS_MODEL_NAME. `socialads info` shows what is in effect.
"""

app = typer.Typer(
    name="socialads",
    help="Predict whether a social-network user buys after seeing an ad.\n" + ENV_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lake_app = typer.Typer(help="The data lake (local folder or S3 bucket).", no_args_is_help=True)
local_app = typer.Typer(
    help="The local Prefect server of the embedded default.", no_args_is_help=True
)
data_app = typer.Typer(help="Datasets to train on.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")
app.add_typer(local_app, name="local")
app.add_typer(data_app, name="data")


@dataclass
class State:
    """What the callback prepares for every command."""

    settings: Settings
    verbose: bool


def _state(ctx: typer.Context) -> State:
    return ctx.obj  # type: ignore[no-any-return]


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str, code: int = 1, hint: str | None = None) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    if hint:
        _say(hint)
    raise typer.Exit(code)


def _run(state: State, action: Callable[[], Any], hint: str | None = None) -> Any:
    """Run a command body; library errors become one line and an exit code (then ``hint``,
    e.g. where the log is)."""
    try:
        return action()
    except SocialAdsError as exc:
        if state.verbose:
            raise
        _fail(str(exc), exc.exit_code, hint)
    except KeyboardInterrupt:
        _fail("interrupted", 130, hint)
    except Exception as exc:
        if state.verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(f"{type(exc).__name__}: {first} (run with --verbose for details)", 1, hint)


@app.callback()
def main_callback(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show library logs and full tracebacks.")
    ] = False,
) -> None:
    """Build the settings once for the command that follows."""
    from pydantic import ValidationError

    from socialads.settings import describe_problems, load_settings

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        _hide_known_warnings()
    try:
        settings = load_settings()
    except ValidationError as exc:
        _fail(f"invalid settings: {describe_problems(exc)}", 2)
    from socialads.models.tracking import http_environment

    # This process and its children (uvicorn workers, Prefect runs) ask MLflow with our policy.
    os.environ.update(http_environment(settings))
    ctx.obj = State(settings=settings, verbose=verbose)


def _hide_known_warnings() -> None:
    """Hide the third-party warnings a person running socialads can do nothing about (each
    named by its message, so a new warning still shows); --verbose shows them all."""
    import warnings

    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # urllib3 (under Prefect's and MLflow's clients) on import: socks proxies are not used.
    ("SOCKS support in urllib3 requires", Warning),
    # MLflow on the model signature: Age and EstimatedSalary arrive as numbers, never missing.
    ("Hint: Inferred schema contains integer column", UserWarning),
)


def _start_prefect(state: State) -> str:
    from flows.runtime import prepare_prefect

    return prepare_prefect(state.settings, notify=_say)


# -- train --------------------------------------------------------------------------------
@app.command()
def train(
    ctx: typer.Context,
    metric: Annotated[
        SelectionMetric | None,
        typer.Option(**option_for("selection_metric", "Selection metric.")),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(**option_for("candidates", "Comma-separated candidate families.")),
    ] = None,
    test_size: Annotated[
        float | None, typer.Option(**option_for("test_size", "Holdout share."))
    ] = None,
    random_state: Annotated[int | None, typer.Option(**option_for("random_state", "Seed."))] = None,
    cv_folds: Annotated[
        int | None, typer.Option(**option_for("cv_folds", "Stratified CV folds."))
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            **option_for(
                "dask_address",
                "Search on a Dask cluster: its scheduler's address (tcp://host:8786), or "
                f"`{LOCAL_CLUSTER}` for a temporary one of two worker processes here.",
            ),
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (nothing else on stdout).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the decision (and errors).")
    ] = False,
) -> None:
    """Run the pipeline (data-prep, then train) and print the leaderboard and the decision.

    The raw CSV is read from the lake (the bundled dataset is put there on first use),
    validated, split and scaled; every candidate is searched with stratified k-fold CV,
    tracked in MLflow, and the best one is registered. The `champion` alias moves only if
    the new version beats the current champion on the same holdout.
    """
    state = _state(ctx)
    overrides: dict[str, Any] = {
        "test_size": test_size,
        "random_state": random_state,
        "selection_metric": metric,
        "candidates": candidates,
        "cv_folds": cv_folds,
        "dask_address": None if dask == LOCAL_CLUSTER else dask,
    }

    checked = _with_options(**overrides)  # fail fast on bad options, before Prefect starts
    if candidates:
        overrides["candidates"] = checked.candidates  # split and stripped by the settings

    from rich.console import Console
    from rich.markup import escape

    from socialads.console import leaderboard_table, stderr_console

    log_file = _train_log(state)
    console = stderr_console()
    live = console.is_terminal and not (as_json or quiet or state.verbose)

    def body() -> dict[str, Any]:
        if checked.dask_address and dask != LOCAL_CLUSTER:
            from socialads.models.cluster import check_scheduler

            check_scheduler(checked.dask_address)  # fail before Prefect starts
        return _pipeline(
            state,
            checked,
            overrides,
            talk=not (as_json or quiet),
            live=live,
            local_cluster=dask == LOCAL_CLUSTER,
        )

    result = _run(state, body, hint=_log_hint(state))
    report = result["train"]
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    headline = _headline(report["decision"])
    if quiet:
        typer.echo(headline)
        return
    out = Console(highlight=False)
    if not out.is_terminal:  # piped, the table keeps every column rather than fitting 80
        out.width = 160
    out.print(leaderboard_table(report))
    out.print(f"[bold]{escape(headline)}[/]")
    out.print(f"run {report['run_id']} in {result['seconds']} s; log: {log_file}", style="dim")


def _pipeline(
    state: State,
    settings: Settings,
    parameters: dict[str, Any] | None = None,
    *,
    talk: bool = True,
    live: bool = False,
    local_cluster: bool = False,
) -> dict[str, Any]:
    """Run the pipeline flow in this process (Prefect's local server when no API is set).

    ``settings`` are those of the run (``parameters``, the flow's, applied); ``talk`` says
    which Prefect API is used; ``live`` draws the steps on the terminal; ``local_cluster``
    searches on a temporary local Dask cluster, closed at the end. Prefect's and MLflow's
    console output goes to the train log (everywhere, with --verbose; stdout then stays the
    command's own).
    """
    from socialads.console import StepDisplay, noise_to_file, stderr_console

    started = time.perf_counter()
    terminal = stderr_console()  # before stderr goes to the log file
    api = _start_prefect(state)
    if talk:
        _say(f"Prefect API: {api}")
    from flows.pipeline import pipeline_flow
    from flows.runtime import attended_run

    parameters = dict(parameters or {})
    with ExitStack() as stack:
        stack.enter_context(attended_run())
        if not state.verbose:
            stack.enter_context(noise_to_file(_train_log(state)))
        else:  # MLflow prints run URLs to stdout
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        if local_cluster:  # after Prefect's environment is set: the workers inherit it
            from socialads.models.cluster import local_cluster as start_cluster

            # The workers' stderr is this terminal: their Prefect logs go to the API only.
            quiet = {} if state.verbose else {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
            address = stack.enter_context(start_cluster(env=quiet))
            parameters["dask_address"] = address
            if talk:
                terminal.print(f"Dask cluster: {address} (temporary, 2 workers)", style="dim")
        if live:
            stack.enter_context(StepDisplay(terminal, len(settings.candidates)))
        result: dict[str, Any] = pipeline_flow(**parameters)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _train_log(state: State) -> Path:
    return state.settings.home / "logs" / "train.log"


def _log_hint(state: State) -> str | None:
    """Where to look when a pipeline run fails (nothing with --verbose: it was all shown)."""
    return None if state.verbose else f"the run's log: {_train_log(state)}"


def _with_options(**options: Any) -> Settings:
    """The settings with the command's given options, checked by the settings' own rules."""
    from pydantic import ValidationError

    from socialads.settings import describe_problems, settings_with

    try:
        return settings_with(**options)
    except ValidationError as exc:
        _fail(f"invalid option: {describe_problems(exc)}", 2)


def _headline(decision: dict[str, Any]) -> str:
    from socialads.models.registry import Decision

    return Decision(**decision).headline()


# -- predict ------------------------------------------------------------------------------
@app.command()
def predict(
    ctx: typer.Context,
    gender: Annotated[str, typer.Option(help=f"{' or '.join(GENDERS)} (any letter case).")],
    age: Annotated[float, typer.Option(help=f"Age, {BOUNDS[AGE].describe()}.")],
    salary: Annotated[
        float, typer.Option(help=f"Estimated yearly salary, {BOUNDS[SALARY].describe()}.")
    ],
) -> None:
    """Predict with the current champion and print JSON.

    Example: socialads predict --gender Female --age 45 --salary 90000
    """
    state = _state(ctx)

    def body() -> dict[str, Any]:
        from socialads.serving.oneoff import predict_one

        return predict_one(state.settings, gender=gender, age=age, salary=salary)

    typer.echo(json.dumps(_run(state, body)))


# -- serve --------------------------------------------------------------------------------
@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(**option_for("api_host", "Bind address."))] = None,
    port: Annotated[int | None, typer.Option(**option_for("api_port", "Port."))] = None,
    workers: Annotated[
        int | None, typer.Option(**option_for("api_workers", "uvicorn workers."))
    ] = None,
    reload_interval: Annotated[
        float | None,
        typer.Option(
            **option_for("reload_interval", "Seconds between checks of the champion alias.")
        ),
    ] = None,
) -> None:
    """Serve the champion over HTTP (POST /predict, /docs, /health, /ready, /metrics)."""
    state = _state(ctx)
    settings = _with_options(
        api_host=host, api_port=port, api_workers=workers, reload_interval=reload_interval
    )

    def body() -> None:
        from socialads.serving.server import run

        run(settings)

    _run(state, body)


# -- deploy -------------------------------------------------------------------------------
@app.command()
def deploy(
    ctx: typer.Context,
    cron: Annotated[
        str | None,
        typer.Option(**option_for("pipeline_cron", "Cron schedule of the pipeline deployment.")),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="Register the deployments on this Prefect work pool (created as a process "
            "pool if missing) and exit; `prefect worker start --pool NAME` runs them.",
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="With --pool on a docker or kubernetes pool: the socialads image its jobs run.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register the pipeline, data-prep, train, score and monitor deployments and serve them
    until stopped — or, with --pool, leave them to a work pool's workers.

    Start runs from the Prefect UI (Deployments) or the API; this process (or the pool's
    workers) executes them. monitor runs on its schedule (SOCIALADS_MONITOR_CRON, hourly);
    the pipeline deployment carries an automation that starts it on the monitor's drift
    event, at most once per SOCIALADS_MONITOR_COOLDOWN.
    """
    state = _state(ctx)
    schedule = cron or state.settings.pipeline_cron
    # A cheap shape check before Prefect starts; Prefect validates the expression fully.
    if schedule and not re.fullmatch(r"\s*([\w*/,?#LW-]+\s+){4}[\w*/,?#LW-]+\s*", schedule):
        _fail(f"invalid cron schedule {schedule!r} (five fields, e.g. '0 3 * * *')", 2)

    if image is not None and pool is None:
        _fail("--image needs --pool (the work pool whose jobs run the image)", 2)

    def body() -> None:
        api = _start_prefect(state)
        _say(f"Prefect API: {api}")
        if pool is None:
            from flows.deploy import serve_deployments

            serve_deployments(state.settings, cron=schedule)
            return
        from flows.deploy import deploy_to_pool

        done = deploy_to_pool(state.settings, pool, cron=schedule, image=image)
        verb = "created" if done.created else "using"
        _say(f"{verb} the {done.pool_type} work pool {done.pool!r}")
        for name in done.deployments:
            typer.echo(f"registered {name} on {done.pool}")
        _say(
            "runs wait for a worker; start one or more with the same settings as this command:\n"
            f"  PREFECT_API_URL={api} prefect worker start --pool {done.pool}"
        )

    _run(state, body)


# -- lake ---------------------------------------------------------------------------------
@lake_app.command("init")
def lake_init(ctx: typer.Context) -> None:
    """Create the lake (and on S3 the artifacts bucket) and upload the raw CSV if absent.

    Idempotent: never overwrites a raw file that is already there.
    """
    state = _state(ctx)

    def body() -> None:
        from socialads.data.lake import RAW_KEY, Lake, init_lake

        lake = Lake.from_settings(state.settings)
        for line in init_lake(lake, state.settings):
            typer.echo(line)
        typer.echo(f"raw data: {lake.uri(RAW_KEY)}")

    _run(state, body)


# -- data ---------------------------------------------------------------------------------
@data_app.command("synth")
def data_synth(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option("--rows", "-n", min=1, help="Rows to generate.")],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the Parquet parts: a path, file:// or s3:// URL (must hold no "
            "Parquet files yet).",
        ),
    ],
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 0,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per part file (and in memory at a time).")
    ] = 100_000,
) -> None:
    """Generate a synthetic dataset like the bundled one (same columns, bounds and joint
    distribution of Gender, Age, EstimatedSalary and Purchased) as partitioned Parquet.

    Train on it with SOCIALADS_RAW_DATASET=<output> socialads train.

    Example: socialads data synth --rows 1000000 --output /tmp/ads-1m
    """
    state = _state(ctx)

    def body() -> Any:
        from socialads.console import row_progress
        from socialads.data.lake import Lake
        from socialads.data.synth import synthesize

        settings = state.settings
        lake = Lake.from_settings(settings, output)
        with row_progress() as progress:
            task = progress.add_task("generating", total=rows)
            return synthesize(
                lake,
                rows,
                seed=seed,
                chunk_rows=chunk_rows,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )

    typer.echo(_run(state, body).line())


# -- local Prefect server -------------------------------------------------------------------
@local_app.command("status")
def local_status(ctx: typer.Context) -> None:
    """Show whether the local Prefect server runs."""
    from socialads.local.embedded import read_local_server

    server = read_local_server(_state(ctx).settings.prefect_home)
    typer.echo(f"running: {server.url} (pid {server.pid})" if server else "not running")


@local_app.command("stop")
def local_stop(ctx: typer.Context) -> None:
    """Stop the local Prefect server (the next command starts it again)."""
    from socialads.local.embedded import stop_local_server

    state = _state(ctx)
    stopped = _run(state, lambda: stop_local_server(state.settings.prefect_home))
    typer.echo("stopped" if stopped else "was not running")


# -- the production loop ------------------------------------------------------------------
@app.command()
def score(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="CSV or Parquet file of users (Gender, Age, EstimatedSalary, any other "
            "columns kept): a path, file:// or s3:// URL.",
        ),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Parquet file to write (path, file:// or s3://); rejected rows go beside it "
            "as <name>.rejects.csv.",
        ),
    ],
    alias: Annotated[
        str | None, typer.Option(help="Score with the version behind this alias.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Score with this registered version instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score a file of users with a registered model (the champion by default).

    Each output row keeps the input's columns and adds request_id, prediction, label,
    probability, model_version and scored_at; every scored row also goes to the prediction
    log. Invalid rows are written to the rejects file with their row number (1 = first data
    row) and the reason. Exits non-zero only when the input cannot be read or no row is valid.

    Example: socialads score --input users.csv --output scores.parquet
    """
    state = _state(ctx)
    if alias and model_version:
        _fail("give --alias or --model-version, not both", 2)

    def body() -> dict[str, Any]:
        from socialads.console import row_progress
        from socialads.serving.scoring import score

        with row_progress(hidden=as_json) as progress:
            task = progress.add_task("scoring", total=None)
            summary = score(
                state.settings,
                source,
                target,
                alias=alias,
                version=model_version,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        return summary.as_dict()

    result = _run(state, body)
    if as_json:
        typer.echo(json.dumps(result))
        return
    labels = ", ".join(f"{label} {count:,}" for label, count in result["labels"].items())
    typer.echo(
        f"scored {result['rows_scored']:,} rows with version {result['model_version']} "
        f"in {result['seconds']:.1f}s → {result['output']} ({labels})"
    )
    if result["rejects"]:
        typer.echo(f"rejected {result['rows_rejected']:,} rows → {result['rejects']}")
    if not result["logged"]:
        _say("warning: the prediction log could not be written (see the message above)")


@app.command()
def feedback(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            help="CSV or Parquet with columns request_id and purchased (0/1): a path, "
            "file:// or s3:// URL.",
        ),
    ],
) -> None:
    """Record true outcomes of earlier predictions (joined with the log on request_id).

    The request ids are those /predict, /predict/batch and `socialads score` returned.
    A file with any invalid row is refused whole, naming the lines.
    """
    state = _state(ctx)

    def body() -> int:
        from socialads.data.lake import Lake
        from socialads.data.production import check_feedback, record_feedback
        from socialads.serving.scoring import read_table

        labels = check_feedback(read_table(state.settings, file))
        return record_feedback(Lake.from_settings(state.settings), labels)

    count = _run(state, body)
    typer.echo(f"recorded {count:,} labels in {state.settings.lake}/feedback/")


@app.command()
def monitor(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(**option_for("monitor_window", "Window: the last 24h, 90m, 7d, ... to now.")),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Window start, ISO 8601 (UTC unless it names a zone), e.g. 2026-12-02."),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Window end (exclusive), ISO 8601; default now.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="When the window drifted or the live F1 fell under its floor, run the "
            "pipeline (data-prep with the labelled production rows, then train and gate) "
            "in this process.",
        ),
    ] = False,
) -> None:
    """Compare a window of the prediction log with the data the champion was trained on.

    Per feature (Gender, Age, EstimatedSalary) and for the predictions (probability, label
    share): Evidently's drift test and a verdict; with enough feedback labels, the live
    accuracy, F1, precision and recall against the champion's holdout. The HTML report goes
    to the lake's reports/monitoring/ and, with the figures, to the MLflow experiment
    socialads-monitoring. A window with too few predictions is reported, not an error.
    Thresholds: SOCIALADS_MONITOR_* (see README, Monitoring).

    Example: socialads monitor --since 6h
    """
    state = _state(ctx)
    if since and (start or end):
        _fail("give --since or --start/--end, not both", 2)
    window = _window_options(since, start, end)

    def body() -> Any:
        from socialads.monitoring.monitor import monitor as run_monitor

        return run_monitor(state.settings, window[0], window[1], since=window[2])

    result = _run(state, body)
    retrained: dict[str, Any] | None = None
    if retrain and result.retrain_due:
        _say(f"{result.status}: running the pipeline to retrain")
        retrained = _run(
            state, lambda: _pipeline(state, state.settings, talk=not as_json), _log_hint(state)
        )
    if as_json:
        out = result.as_dict()
        if retrain:
            out["retrained"] = retrained
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    _print_monitoring(result)
    if retrained is not None:
        typer.secho(_headline(retrained["train"]["decision"]), bold=True)
    elif retrain:
        typer.echo("no retraining: the window has not drifted and the live F1 holds")


def _window_options(since: str | None, start: str | None, end: str | None) -> tuple[Any, Any, Any]:
    """(start, end, since) from the options; one-line errors for malformed values."""
    from datetime import UTC, datetime

    from socialads.settings import parse_duration

    def moment(name: str, text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            _fail(f"--{name}: not an ISO 8601 date or time: {text!r} (e.g. 2026-12-02T08:00)", 2)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    try:
        span = parse_duration(since) if since else None
    except ValueError as exc:
        _fail(f"--since: {exc}", 2)
    first, last = moment("start", start), moment("end", end)
    if first and last and first >= last:
        _fail("--start must be before --end", 2)
    return first, last, span


def _print_monitoring(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output keeps its rows whole (Rich would wrap at 80 columns).
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    console.print(
        f"window {result.start:%Y-%m-%d %H:%M} – {result.end:%Y-%m-%d %H:%M} UTC: "
        f"{result.rows:,} predictions"
        + (f", model version {result.model_version}" if result.model_version else "")
    )
    if result.status == "skipped":
        console.print(result.message)
        return
    table = Table(box=None, pad_edge=False)
    for name, justify in (
        ("column", "left"),
        ("statistic", "left"),
        ("reference", "right"),
        ("current", "right"),
        ("test", "left"),
        ("score", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for column in (*result.features, *result.predictions):
        table.add_row(
            column.column,
            column.statistic,
            _number(column.reference),
            _number(column.current),
            column.method,
            f"{column.score:.3g}",
            "[bold red]drifted[/]" if column.drifted else "stable",
        )
    console.print(table)
    if result.quality is not None:
        live, holdout = result.quality.live, result.quality.holdout
        console.print(
            f"live on {result.quality.rows:,} labelled: "
            + ", ".join(f"{m} {live[m]:.3f} (holdout {holdout[m]:.3f})" for m in live)
        )
    console.print(f"[bold]{result.status}[/]: {result.message}")
    console.print(f"report: {result.report_uri}")
    if result.quality_report_uri:
        console.print(f"quality report: {result.quality_report_uri}")


def _number(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"


@app.command()
def info(ctx: typer.Context) -> None:
    """Show the settings in effect (secrets hidden)."""
    for key, value in _state(ctx).settings.describe().items():
        typer.echo(f"{key:>12}: {value}")


def main() -> None:
    """Console-script entry point: usage errors become one line and exit code 2."""
    # Typer 0.29 vendors click; its exceptions live here (typer is pinned below 0.30).
    from typer._click import exceptions as click_errors

    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click_errors.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        message = " ".join(exc.format_message().split())
        typer.secho(f"error: {message}{where}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except click_errors.ClickException as exc:
        typer.secho(
            f"error: {' '.join(exc.format_message().split())}", err=True, fg=typer.colors.RED
        )
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.secho("error: aborted", err=True, fg=typer.colors.RED)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)

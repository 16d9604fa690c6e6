"""Throughput of POST /predict: the real app against a bare FastAPI endpoint.

For each ``--family``, a pipeline of that candidate family (default hyperparameters) is
fitted on the bundled dataset (no MLflow, no registry) and served through the real app
(:func:`socialads.serving.app.create_app` with an injected loader), next to a bare app
whose /predict parses the same body with the same pydantic model and returns a constant.
Each app runs in its own uvicorn process (one worker, the options of ``socialads serve``)
on a loopback port; ``wrk`` loads them with ``--connections`` connections for
``--duration`` seconds per round, both at once (``--mode concurrent``, the default) or in
turn (``--mode alternate``: bare, real, real, bare, ...; on two or more CPUs the servers
are then pinned to CPU 0 and wrk to CPU 1). The medians over the rounds are printed with
the real/bare ratio.

Side by side, both servers see the same machine at the same moment: on a shared or busy
machine the absolute figures swing from one run to the next, but the two apps share the
CPUs fairly, so their ratio stays put. Alternating gives each app the whole machine in
turn, which is the better absolute figure on a quiet, dedicated one.

Besides req/s, each run reports requests per CPU-second of the server process (from
/proc): on a shared, busy machine the wall-clock rate follows whatever else runs, while
the CPU cost of a request does not, so that ratio is the steadier estimate of the
throughput each app reaches on a dedicated core.

Needs wrk: ``apt-get update && apt-get install -y wrk`` (or ``brew install wrk``).

Example::

    python benchmarks/api_throughput.py --family gaussian_nb --family svm_rbf \
        --family random_forest --duration 15
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "predict.lua"
FAMILIES = (
    "gaussian_nb",
    "logistic_regression",
    "svm_rbf",
    "knn",
    "random_forest",
    "gradient_boosting",
)
SAMPLE = {"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}


# -- the servers (run in subprocesses: ``--serve bare|real``) -----------------------------------
def fitted_pipeline(family: str) -> Any:
    """A pipeline of ``family`` fitted on the bundled dataset."""
    import warnings
    from importlib import resources

    import pandas as pd

    from socialads.data.schema import FEATURES, TARGET
    from socialads.features.preprocessing import build_pipeline
    from socialads.models.candidates import CANDIDATES

    source = resources.files("socialads.data").joinpath("Social_Network_Ads.csv")
    with resources.as_file(source) as path:
        frame = pd.read_csv(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = build_pipeline(CANDIDATES[family].factory(42))
        return pipeline.fit(frame[list(FEATURES)], frame[TARGET])


def bare_app(style: str = "body") -> Any:
    """FastAPI, the same request model, a constant answer.

    ``body`` (the baseline): the model is a FastAPI body parameter and the constant a dict.
    ``raw``: the endpoint validates the raw body with ``model_validate_json`` and returns
    ready bytes, as the real /predict does; it measures what the model costs on top.
    """
    from fastapi import FastAPI, Request, Response

    from socialads.serving.schemas import PredictRequest

    # No `from __future__ import annotations` in this file: FastAPI must see the class.
    app = FastAPI()
    constant = {"prediction": 1, "label": "COMPRA", "probability": 0.5, "model_version": "1"}
    encoded = json.dumps(constant).encode()

    if style == "body":

        @app.post("/predict")
        async def predict(record: PredictRequest) -> dict[str, Any]:
            return constant

    else:

        @app.post("/predict")
        async def predict_raw(request: Request) -> Response:
            PredictRequest.model_validate_json(await request.body())
            return Response(encoded, media_type="application/json")

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def real_app(family: str, home: Path, prediction_log: bool = True) -> Any:
    """The service's app, serving a freshly fitted pipeline as version 1, with its ONNX graph
    when the training-time check passes (as training stores it), else its Pipeline."""
    from datetime import UTC, datetime
    from importlib import resources

    import pandas as pd

    from socialads.models.onnx_export import export
    from socialads.models.registry import ChampionModel
    from socialads.serving.app import create_app
    from socialads.settings import Settings

    pipeline = fitted_pipeline(family)
    source = resources.files("socialads.data").joinpath("Social_Network_Ads.csv")
    with resources.as_file(source) as path:
        exported = export(pipeline, pd.read_csv(path))

    def loader(settings: Settings) -> ChampionModel:
        return ChampionModel(
            name="SocialNetworkAdsModel",
            version="1",
            alias="champion",
            run_id=None,
            pipeline=pipeline,
            metrics={},
            loaded_at=datetime.now(UTC),
            onnx=exported.model,
            onnx_reason=exported.reason,
        )

    settings = Settings(SOCIALADS_HOME=str(home), SOCIALADS_PREDICTION_LOG=prediction_log)
    return create_app(settings, loader)


def serve(kind: str, family: str, port: int, baseline: str) -> None:
    """Subprocess body: one uvicorn worker with the options of ``socialads serve``."""
    import uvicorn

    from socialads.serving.server import uvicorn_options
    from socialads.settings import Settings

    with tempfile.TemporaryDirectory(prefix="socialads-bench-") as tmp:
        # Settings take their variables' names (field names are not accepted as input).
        settings = Settings(
            SOCIALADS_HOME=tmp, SOCIALADS_API_HOST="127.0.0.1", SOCIALADS_API_PORT=port
        )
        if kind == "real":
            app = real_app(family, Path(tmp))
        elif baseline == "nolog":  # the real app with its prediction log off
            app = real_app(family, Path(tmp), prediction_log=False)
        else:
            app = bare_app(baseline)
        options = uvicorn_options(settings) | {"log_level": "warning"}
        uvicorn.run(app, **options)


# -- the driver ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(pid: int, cpu: int) -> None:
    """Keep a process on one CPU (no-op on one-CPU machines or without affinity support)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})


def start_server(
    kind: str, family: str, baseline: str, stack: ExitStack
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--family", family, "--port", str(port)]
    command += ["--baseline", baseline]
    proc = subprocess.Popen(command)
    pin(proc.pid, 0)
    stack.callback(stop, proc)
    return f"http://127.0.0.1:{port}", proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server behind {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} was not ready after {timeout:.0f} s")


def post_sample(url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps(SAMPLE).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_wrk(url: str, args: argparse.Namespace, cpu: int | None) -> subprocess.Popen[str]:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"{url}/predict",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None:
        pin(proc.pid, cpu)
    return proc


def finish_wrk(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}): {err.strip()}")
    summary = json.loads(out.strip().splitlines()[-1])
    seconds = summary["duration_us"] / 1e6
    errors = sum(
        summary[key]
        for key in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return {
        "requests": summary["requests"],
        "rps": summary["requests"] / seconds,
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "errors": errors,
    }


def load(
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]],
    kinds: tuple[str, ...],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Run wrk against ``kinds`` at once; adds each server's requests per CPU-second."""
    before = {kind: cpu_seconds(servers[kind][1].pid) for kind in kinds}
    cpu = 1 if len(kinds) == 1 else None
    procs = {kind: start_wrk(servers[kind][0], args, cpu) for kind in kinds}
    results = {kind: finish_wrk(proc) for kind, proc in procs.items()}
    for kind in kinds:
        start, end = before[kind], cpu_seconds(servers[kind][1].pid)
        used = None if start is None or end is None else end - start
        results[kind]["cpu_s"] = used
        results[kind]["rps_cpu"] = results[kind]["requests"] / used if used else float("nan")
    return results


def bench_family(family: str, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        servers = {
            kind: start_server(kind, family, args.baseline, stack) for kind in ("bare", "real")
        }
        for url, proc in servers.values():
            wait_ready(url, proc)
        answer = post_sample(servers["real"][0])
        print(f"[{family}] real app answers {json.dumps(SAMPLE)} with {json.dumps(answer)}")
        with urllib.request.urlopen(f"{servers['real'][0]}/model", timeout=10) as response:
            served = json.load(response)
        engine = served["engine"]
        print(f"[{family}] engine {engine} ({served['estimator']}): {served['engine_reason']}")
        warm = argparse.Namespace(**vars(args) | {"duration": args.warmup})
        load(servers, ("bare", "real"), warm)  # connections, caches, first-call costs
        print(f"[{family}] RSS after warm-up: {rss_mib(servers)}")
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "real": []}
        sampler = RssSampler(servers, args.rss_every)
        for round_no in range(args.rounds):
            if args.mode == "concurrent":
                steps: list[tuple[str, ...]] = [("bare", "real")]
            else:
                steps = [("bare",), ("real",)] if round_no % 2 == 0 else [("real",), ("bare",)]
            for kinds in steps:
                for kind, result in load(servers, kinds, args).items():
                    runs[kind].append(result)
                    print(
                        f"[{family}] round {round_no + 1} {kind:>4}: {result['rps']:7.0f} req/s "
                        f"({result['rps_cpu']:5.0f} per CPU-s)  p50 {result['p50_ms']:6.2f} ms  "
                        f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}",
                        flush=True,
                    )
        sampler.stop()
        print(f"[{family}] RSS after the rounds: {rss_mib(servers)}")
        for kind, series in sampler.series.items():
            if series:
                print(
                    f"[{family}] {kind} RSS every {args.rss_every:g} s during the rounds (MiB): "
                    f"{' '.join(f'{v:.0f}' for v in series)}; min {min(series):.1f}, "
                    f"max {max(series):.1f}, last - first {series[-1] - series[0]:+.1f}"
                )
    summary: dict[str, Any] = {"family": family, "engine": engine}
    for kind, results in runs.items():
        summary[kind] = {
            key: statistics.median(r[key] for r in results)
            for key in ("rps", "rps_cpu", "p50_ms", "p99_ms")
        }
        summary[kind]["errors"] = sum(r["errors"] for r in results)
    summary["ratio"] = summary["real"]["rps"] / summary["bare"]["rps"]
    summary["ratio_cpu"] = summary["real"]["rps_cpu"] / summary["bare"]["rps_cpu"]
    return summary


class RssSampler:
    """Samples each server's RSS every ``every`` seconds in a thread (none when ``every`` <= 0)."""

    def __init__(self, servers: dict[str, tuple[str, subprocess.Popen[bytes]]], every: float):
        self.series: dict[str, list[float]] = {kind: [] for kind in servers}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if every > 0:
            self._thread = threading.Thread(target=self._run, args=(servers, every), daemon=True)
            self._thread.start()

    def _run(self, servers: dict[str, tuple[str, subprocess.Popen[bytes]]], every: float) -> None:
        while not self._done.wait(every):
            for kind, size in rss_mib(servers).items():
                self.series[kind].append(size)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


def rss_mib(servers: dict[str, tuple[str, subprocess.Popen[bytes]]]) -> dict[str, float]:
    """Resident memory of each server process (MiB), from /proc."""
    sizes = {}
    for kind, (_, proc) in servers.items():
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes[kind] = round(int(line.split()[1]) / 1024, 1)
    return sizes


def print_table(summaries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"POST /predict, 1 uvicorn worker, {args.connections} connections, {args.mode}, "
        f"baseline {args.baseline}, "
        f"{args.rounds} x {args.duration:g} s per app (medians)"
    )
    header = (
        f"{'family':<18} {'app':<5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'req/CPU-s':>9} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for summary in summaries:
        for kind in ("bare", "real"):
            row = summary[kind]
            print(
                f"{summary['family']:<18} {kind:<5} {row['rps']:7.0f} {row['p50_ms']:7.2f} "
                f"{row['p99_ms']:7.2f} {row['rps_cpu']:9.0f} {row['errors']:6d}"
            )
        print(
            f"{'':<18} real/bare: req/s {summary['ratio']:.3f}, "
            f"req per CPU-s {summary['ratio_cpu']:.3f} (engine {summary['engine']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--family", action="append", choices=FAMILIES, help="repeatable; default gaussian_nb"
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per app")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per app")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--rss-every",
        type=float,
        default=0.0,
        help="sample each server's RSS every N seconds during the rounds and print the series",
    )
    parser.add_argument(
        "--mode",
        choices=("alternate", "concurrent"),
        default="concurrent",
        help="load both apps at once (default) or in turn",
    )
    parser.add_argument(
        "--baseline",
        choices=("body", "raw", "nolog"),
        default="body",
        help="bare endpoint: FastAPI body parameter (default) or raw-body validation; "
        "nolog: the real app with its prediction log off (the cost of the log)",
    )
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON too")
    parser.add_argument("--serve", choices=("bare", "real"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    families = args.family or ["gaussian_nb"]
    if args.serve:
        serve(args.serve, families[0], args.port, args.baseline)
        return
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: apt-get update && apt-get install -y wrk "
            "(macOS: brew install wrk)"
        )
    summaries = [bench_family(family, args) for family in families]
    print_table(summaries, args)
    if args.json:
        print(json.dumps(summaries, indent=2))
    bad = [s["family"] for s in summaries if s["real"]["errors"] or s["bare"]["errors"]]
    if bad:
        raise SystemExit(f"requests failed under load for {bad}")


if __name__ == "__main__":
    main()

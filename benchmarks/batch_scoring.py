"""Rows per second of batch scoring: in-process on 1 M rows, and POST /predict/batch.

For each ``--family``, a pipeline fitted on the bundled dataset is exported as training
does (ONNX graph when the check passes, else the scikit-learn Pipeline serves) and:

* in process: its engine scores ``--rows`` random valid records in one ``predict_many``
  call (the best of ``--repeat``);
* over HTTP: the real app (one uvicorn worker on a loopback port) answers ``--requests``
  sequential ``POST /predict/batch`` of ``--batch`` records (the API's default limit).

Example::

    python benchmarks/batch_scoring.py --family random_forest --family knn
"""

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_throughput import FAMILIES, real_app  # noqa: E402


def records(n: int, seed: int = 0) -> tuple[list[str], Any, Any]:
    """Random valid records: Gender list, Age and EstimatedSalary arrays within the bounds."""
    import numpy as np

    from socialads.data.schema import AGE, BOUNDS, GENDERS, SALARY

    rng = np.random.default_rng(seed)
    genders = [GENDERS[i] for i in rng.integers(0, len(GENDERS), n)]
    ages = rng.uniform(BOUNDS[AGE].minimum, BOUNDS[AGE].maximum, n)
    salaries = rng.uniform(BOUNDS[SALARY].minimum, BOUNDS[SALARY].maximum, n)
    return genders, ages, salaries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench(family: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import uvicorn

    from socialads.serving.server import uvicorn_options
    from socialads.settings import Settings

    with tempfile.TemporaryDirectory(prefix="socialads-batch-") as tmp:
        port = free_port()
        settings = Settings(
            SOCIALADS_HOME=tmp, SOCIALADS_API_HOST="127.0.0.1", SOCIALADS_API_PORT=port
        )
        app = real_app(family, Path(tmp))
        server = uvicorn.Server(
            uvicorn.Config(app, **(uvicorn_options(settings) | {"log_level": "warning"}))
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"[{family}] the app did not become ready")
                time.sleep(0.2)
            engine = app.state.services.store.current.engine
            genders, ages, salaries = records(args.rows)
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                engine.predict_many(genders, ages, salaries)
                best = min(best, time.perf_counter() - started)
            g, a, s = records(args.batch, seed=1)
            body = json.dumps(
                {
                    "records": [
                        {"Gender": gi, "Age": float(ai), "EstimatedSalary": float(si)}
                        for gi, ai, si in zip(g, a, s, strict=True)
                    ]
                }
            )
            headers = {"Content-Type": "application/json"}
            http.post("/predict/batch", content=body, headers=headers).raise_for_status()
            started = time.perf_counter()
            for _ in range(args.requests):
                answer = http.post("/predict/batch", content=body, headers=headers)
                answer.raise_for_status()
            http_seconds = time.perf_counter() - started
        server.should_exit = True
        thread.join(timeout=30)
    result = {
        "family": family,
        "engine": engine.name,
        "in_process_rows_per_s": args.rows / best,
        "batch_rows_per_s": args.requests * args.batch / http_seconds,
        "batch_ms_per_request": 1000 * http_seconds / args.requests,
    }
    print(
        f"[{family}] engine {result['engine']}: in process {result['in_process_rows_per_s']:,.0f}"
        f" rows/s ({args.rows:,} rows); /predict/batch {result['batch_rows_per_s']:,.0f} rows/s"
        f" ({args.batch} records, {result['batch_ms_per_request']:.1f} ms per request)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", choices=FAMILIES)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    for family in args.family or ["gaussian_nb"]:
        bench(family, args)


if __name__ == "__main__":
    main()

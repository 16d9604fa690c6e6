#!/usr/bin/env python3
"""Start natively, on loopback, what docker compose runs: S3 (SeaweedFS), MLflow and Prefect.

Usage::

    python scripts/stack.py up|down|env|status [--dir DIR] [--base-port N]
                            [--db-prefix P] [--drop-dbs]
    eval "$(python scripts/stack.py env)"      # point the socialads app at the stack

``up`` prints progress on stderr and the ``export`` lines on stdout, so
``eval "$(python scripts/stack.py up)"`` works too. PostgreSQL is not started: the one at
``SOCIALADS_STACK_PG_DSN`` is used, and the two databases are created there when missing.
The servers, their command lines and the supervision live in socialads.local (stack, servers,
supervisor); this is their command line.

Settings (environment, all optional):

    SOCIALADS_STACK_DIR             state dir: pids, logs, data (default .socialads/stack)
    SOCIALADS_STACK_BASE_PORT       base port (default 19000); the ports are base + offset:
                                    s3 +0, mlflow +1, prefect +2, weed master/volume/filer/
                                    admin +3..+6, S3 and weed gRPC +7..+10, each overridable
                                    by SOCIALADS_STACK_<NAME>_PORT (socialads.local.stack.Ports)
    SOCIALADS_STACK_S3_ACCESS_KEY   S3 admin access key (else MINIO_ACCESS_KEY, else minio)
    SOCIALADS_STACK_S3_SECRET_KEY   S3 admin secret (else MINIO_SECRET_ACCESS_KEY, else minio123)
    SOCIALADS_ARTIFACTS_BUCKET      MLflow artifact bucket, created at start (default mlflow)
    SOCIALADS_STACK_PG_DSN          admin DSN, URL form
                                    (default postgresql://postgres@127.0.0.1:5432/postgres)
    SOCIALADS_STACK_DB_PREFIX       prefix of the database names <prefix>mlflow, <prefix>prefect
    SOCIALADS_STACK_DROP_DBS        1: ``down`` drops the databases that ``up`` created
    SOCIALADS_STACK_PREFECT_UI      0: no Prefect UI (default 1, as in compose)
    SOCIALADS_STACK_MLFLOW_WORKERS  MLflow server workers (default 1; the machine has 2 cores)
    SOCIALADS_STACK_TIMEOUT         seconds the servers get to become healthy (default 180)
    SOCIALADS_STACK_GRACE           seconds between SIGTERM and SIGKILL on down (default 15)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from socialads.errors import ServiceError
from socialads.local.stack import DEFAULT_DIR, Stack, StackConfig, export_lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python scripts/stack.py``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
    cfg = StackConfig.from_env(os.environ, args.dir, args.base_port, **overrides)
    # Talk to what actually runs: reuse the ports and keys recorded by `up`.
    if args.base_port is None and (args.command != "up" or Stack(cfg).is_running()):
        cfg = cfg.recorded()
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
    except ServiceError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

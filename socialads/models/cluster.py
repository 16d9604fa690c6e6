"""Training on a Dask cluster: reaching its scheduler, and scikit-learn's CV fits on it.

The candidates' searches are spread over the cluster by the flow (Prefect's DaskTaskRunner);
inside each search, :func:`fits_on_cluster` sends GridSearchCV's fits (joblib calls) to the
same cluster, so one search fans out across the workers. Only data passed to them (the
training split, the estimator) reaches the workers: a fit reads no lake and no registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from socialads.errors import ClusterUnreachableError

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for the scheduler: an unreachable address fails fast, not in minutes."""


@dataclass(frozen=True)
class ClusterInfo:
    """What the scheduler said when it was checked."""

    address: str
    workers: int
    threads: int


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address`` (not made the process' default);
    :class:`ClusterUnreachableError` when it does not answer within ``timeout`` seconds."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:  # distributed reports refusals and time-outs so
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterUnreachableError(address, first) from exc


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> ClusterInfo:
    """Ask the scheduler at ``address`` for its workers (before anything is changed)."""
    with connect(address, timeout) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        return ClusterInfo(address=address, workers=len(workers), threads=threads)


@contextmanager
def fits_on_cluster(address: str | None) -> Iterator[None]:
    """joblib's parallel calls inside the block (GridSearchCV's CV fits) run on the Dask
    cluster at ``address``, whatever their ``n_jobs``; with no address, nothing changes.

    On a worker of that cluster (a search task sent there) the worker's own client is used,
    so the fits are tasks of the same scheduler; elsewhere a client is opened for the block.
    """
    if address is None:
        yield
        return
    import joblib
    from distributed import get_client, get_worker

    with ExitStack() as stack:
        try:
            get_worker()
            client = get_client()  # the worker's client; joblib secedes while it waits
        except ValueError:  # not in a worker
            client = stack.enter_context(connect(address))
        stack.enter_context(joblib.parallel_config(backend="dask", client=client))
        yield


LOCAL_WORKERS = 2


@contextmanager
def local_cluster(
    workers: int = LOCAL_WORKERS, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A temporary Dask cluster on this machine (``workers`` processes of one thread each,
    listening on 127.0.0.1 only, no dashboard) for the block; yields its scheduler address.

    The workers are new Python processes started from this one's environment (plus ``env``),
    so they import the same socialads.
    """
    import logging

    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env=dict(env or {}),
    ) as cluster:
        yield cluster.scheduler_address

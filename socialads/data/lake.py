"""The data lake: one fsspec code path for a local folder (file://) and S3 (s3://).

Layout (relative keys): ``raw/Social_Network_Ads.csv``; each data-prep run's outputs under
``processed/<run id>/`` (``train.csv``, ``test.csv``, ``scaler.joblib``, ``manifest.json``);
and ``processed/manifest.json``, the pointer to the current run, written last
(:mod:`socialads.data.processed`).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from functools import cached_property
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from socialads.errors import LakeError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from socialads.settings import Settings

log = logging.getLogger(__name__)

RAW_KEY = "raw/Social_Network_Ads.csv"
PROCESSED = "processed"
MANIFEST_KEY = f"{PROCESSED}/manifest.json"
SCALER_KEY = "artifacts/scaler.joblib"
"""The current run's scaler where the original project kept it (a copy, written after the
pointer switch; training uses the run's own)."""
BUNDLED_DATASET = "Social_Network_Ads.csv"

T = TypeVar("T")


def bundled_dataset() -> bytes:
    """The dataset shipped inside the package, byte for byte."""
    return resources.files("socialads.data").joinpath(BUNDLED_DATASET).read_bytes()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (dataset lineage)."""
    return hashlib.sha256(data).hexdigest()


def _is_transient(exc: BaseException) -> bool:
    """Errors worth a retry: connection trouble, time-outs and throttling. Credentials,
    missing keys and refused requests are final."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    name = type(exc).__name__.lower()
    text = str(exc).lower()
    return any(word in name for word in ("endpoint", "connect", "timeout")) or any(
        word in text for word in ("slow down", "slowdown", "throttl", "service unavailable")
    )


class Lake:
    """Reads and writes lake keys below one fsspec URL."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        retries: int = 3,
        endpoint: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.retries = retries
        self.endpoint = endpoint

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> Lake:
        """The lake the settings point at, or the folder or bucket at ``url`` with the
        settings' credentials and retries."""
        target = url or settings.lake
        return cls(
            target,
            settings.storage_options(target),
            retries=settings.io_retries,
            endpoint=settings.s3_endpoint_url,
        )

    @property
    def is_local(self) -> bool:
        """True for a folder on this machine."""
        return self.url.startswith("file://") or "://" not in self.url

    @cached_property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem behind the URL."""
        import fsspec

        fs, _ = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs

    @cached_property
    def root(self) -> str:
        """The lake's root path as the filesystem names it."""
        import fsspec

        _, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return str(path).rstrip("/")

    def path(self, key: str) -> str:
        """Filesystem path of a lake key (the root itself for ``""``)."""
        return f"{self.root}/{key}" if key else self.root

    def uri(self, key: str) -> str:
        """Full URL of a lake key, for messages and lineage."""
        return f"{self.url}/{key}" if key else self.url

    def where(self) -> str:
        """The lake and, for S3, its endpoint: what a person needs to find the problem."""
        return f"{self.url} (endpoint {self.endpoint})" if self.endpoint else self.url

    def _call(self, what: str, func: Callable[[], T]) -> T:
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return func()
            except Exception as exc:
                if attempt < attempts and _is_transient(exc):
                    delay = min(0.5 * 2 ** (attempt - 1), 4.0)
                    log.warning(
                        "%s failed (%s); retry %d/%d in %.1fs",
                        what,
                        exc,
                        attempt,
                        self.retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                raise self._translate(what, exc, retried=attempt > 1) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, what: str, exc: Exception, *, retried: bool = False) -> LakeError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, FileNotFoundError):
            return LakeError(f"{what}: not found in the lake {self.where()}")
        # A transient error the lake already retried is final for its callers: retrying it
        # again outside (Prefect task retries) multiplies the wait on a dead endpoint.
        return LakeError(
            f"{what} in the lake {self.where()} failed: {detail}",
            transient=_is_transient(exc) and not retried,
        )

    # -- operations ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """True when the key is present."""
        return bool(self._call(f"checking {key}", lambda: self.fs.exists(self.path(key))))

    def read_bytes(self, key: str) -> bytes:
        """The content of a key."""
        return bytes(self._call(f"reading {key}", lambda: self.fs.cat_file(self.path(key))))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a key so that readers see the old or the new content, never a part.

        An S3 PUT is atomic; on a local folder the bytes go to a temporary name first.
        """

        def write() -> None:
            target = self.path(key)
            if self.is_local:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{target}.tmp-{uuid.uuid4().hex}"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, target)
            else:
                self.fs.pipe_file(target, data)

        self._call(f"writing {key}", write)

    def delete(self, key: str) -> None:
        """Remove a key if present."""

        def remove() -> None:
            if self.fs.exists(self.path(key)):
                self.fs.rm_file(self.path(key))

        self._call(f"deleting {key}", remove)

    def folders(self, key: str) -> list[str]:
        """Names of the folders (S3: common prefixes) directly below ``key``; none if absent."""

        def listing() -> list[str]:
            base = self.path(key)
            if not self.fs.exists(base):
                return []
            entries = self.fs.ls(base, detail=True, refresh=True)
            return sorted(
                str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
                for e in entries
                if e["type"] == "directory"
            )

        return self._call(f"listing {key}/", listing)

    def glob(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern of keys (``predictions/date=*/part-*.parquet``), sorted."""

        def listing() -> list[str]:
            found = self.fs.glob(self.path(pattern), refresh=True)
            start = len(self.root) + 1
            return sorted(str(path)[start:] for path in found)

        return self._call(f"listing {pattern}", listing)

    def files(self, key: str = "") -> list[tuple[str, int, str]]:
        """Every file at or below ``key`` (recursively) as (key, size in bytes, version),
        sorted; the key of the root itself is ``""``. The version is what the store says
        changes with a rewrite: S3's ETag, else the modification time."""

        def listing() -> list[tuple[str, int, str]]:
            found = self.fs.find(self.path(key), detail=True)
            start = len(self.root) + 1
            return sorted(
                (
                    str(name)[start:],
                    int(info.get("size") or 0),
                    str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""),
                )
                for name, info in found.items()
                if info.get("type", "file") == "file"
            )

        return self._call(f"listing {key or self.url}", listing)

    def delete_folder(self, key: str) -> None:
        """Remove ``key`` and everything below it."""

        def remove() -> None:
            if self.fs.exists(self.path(key)):
                self.fs.rm(self.path(key), recursive=True)

        self._call(f"deleting {key}/", remove)

    def ensure_root(self) -> bool:
        """Create the lake's folder or bucket when it is missing. Returns True when created."""

        def create() -> bool:
            if self.fs.exists(self.root):
                return False
            self.fs.makedirs(self.root, exist_ok=True)
            return True

        return self._call("creating the lake's root", create)

    def ensure_raw(self) -> bool:
        """Put the bundled dataset at the raw key when it is missing; never overwrite.

        Returns True when it was uploaded.
        """
        if self.exists(RAW_KEY):
            return False
        self.write_bytes(RAW_KEY, bundled_dataset())
        log.info("uploaded the bundled dataset to %s", self.uri(RAW_KEY))
        return True


def init_lake(lake: Lake, settings: Settings) -> list[str]:
    """Create the lake's bucket or folder (and, on S3, MLflow's artifacts bucket) and put the
    raw CSV in place when absent. Idempotent; returns what it did, one line per step."""
    done = [f"{'created' if lake.ensure_root() else 'found'} {lake.url}"]
    if not lake.is_local:
        artifacts = Lake.from_settings(settings, f"s3://{settings.artifacts_bucket}")
        done.append(f"{'created' if artifacts.ensure_root() else 'found'} {artifacts.url}")
    uploaded = lake.ensure_raw()
    done.append(
        ("uploaded the bundled dataset to " if uploaded else "kept the raw file at ")
        + lake.uri(RAW_KEY)
    )
    return done

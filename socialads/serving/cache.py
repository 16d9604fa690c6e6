"""A local cache of champions' ONNX graphs, so that `socialads predict` answers in < 2 s.

Loading a model through MLflow costs seconds of imports alone (MLflow, its SQL store, skops,
scikit-learn). The champion's checked ONNX graph is one file that ONNX Runtime runs without
any of them, so it is kept under ``<home>/cache/models/<store key>/v<version>.onnx``, keyed
by tracking URI, model name and version (a registered version never changes).

Which version is champion is still decided by the registry on every call:

* an MLflow server is asked over its public REST API (``registered-models/alias``), one
  small HTTP request;
* the embedded SQLite store has no server, and its tables are MLflow's private business. The
  version last read through MLflow's client is remembered together with the store file's
  identity (inode, size, modification time) taken just *before* that read; as long as the
  file is unchanged, nothing was written to the store since, so the alias cannot have moved.
  Any write (a training, an alias moved with MLflow's API or UI) changes the file, and the
  next call asks MLflow again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from socialads.errors import NoChampionError

if TYPE_CHECKING:
    from socialads.settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
LOOKUP_TIMEOUT = 5.0
Identity = list[list[int]]
"""(inode, size, mtime_ns) of the SQLite store's files; [] for a missing file."""


def _folder(settings: Settings) -> Path:
    key = hashlib.sha256(f"{settings.mlflow_uri}\n{settings.model_name}".encode()).hexdigest()
    return settings.home / "cache" / "models" / key[:16]


def _sqlite_path(settings: Settings) -> Path | None:
    uri = settings.mlflow_uri
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_identity(settings: Settings) -> Identity | None:
    """The SQLite store's identity now (None for other stores)."""
    path = _sqlite_path(settings)
    if path is None:
        return None
    identity: Identity = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            st = file.stat()
        except FileNotFoundError:
            identity.append([])
            continue
        identity.append([st.st_ino, st.st_size, st.st_mtime_ns])
    return identity


def champion_version_quick(settings: Settings) -> str | None:
    """The champion's version without MLflow's client, or None when it must be asked.

    Raises :class:`NoChampionError` when the store certainly has no champion.
    """
    uri = settings.mlflow_uri
    if uri.startswith(("http://", "https://")):
        return _version_over_rest(uri, settings.model_name, settings.champion_alias)
    path = _sqlite_path(settings)
    if path is None:
        return None
    if not path.exists():
        raise NoChampionError.of(settings.champion_alias, settings.model_name, uri)
    pointer = _pointer(settings)
    try:
        remembered = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    if remembered.get("format") != FORMAT_VERSION:
        return None
    if remembered.get("store") != store_identity(settings):
        return None
    return str(remembered["version"]) if remembered.get("version") is not None else None


def remember_champion(settings: Settings, version: str, identity: Identity | None) -> None:
    """Record that the store, as it was at ``identity``, named ``version`` champion."""
    if identity is None:
        return
    _write(
        _pointer(settings),
        json.dumps({"format": FORMAT_VERSION, "version": version, "store": identity}).encode(),
    )


def _pointer(settings: Settings) -> Path:
    return _folder(settings) / f"alias-{settings.champion_alias}.json"


def _version_over_rest(uri: str, name: str, alias: str) -> str | None:
    """MLflow's public REST API; None (ask the client) on anything but a clear answer."""
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}"
    try:
        with urllib.request.urlopen(url, timeout=LOOKUP_TIMEOUT) as response:
            return str(json.load(response)["model_version"]["version"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NoChampionError.of(alias, name, uri) from exc
        log.debug("champion lookup over REST failed: %s", exc)
    except (OSError, ValueError, KeyError) as exc:
        log.debug("champion lookup over REST failed: %s", exc)
    return None


def load_onnx(settings: Settings, version: str) -> bytes | None:
    """The cached ONNX graph of ``version``, or None."""
    try:
        return (_folder(settings) / f"v{version}.onnx").read_bytes()
    except OSError:
        return None


def store_onnx(settings: Settings, version: str, model: bytes) -> None:
    """Cache the ONNX graph of ``version``."""
    _write(_folder(settings) / f"v{version}.onnx", model)


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

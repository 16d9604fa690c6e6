"""A local cache of compiled champions, so that `socialads predict` answers in well under 2 s.

Loading a model through MLflow costs seconds of imports alone (MLflow, its SQL store, skops,
all of scikit-learn). The compiled predictor of a registered version is plain numbers, so it
is kept under ``<home>/cache`` as JSON + ``.npz`` (no pickle: nothing executable is stored)
and keyed by tracking URI, model name and version. Which version is champion is still asked
of the registry on every call, through a cheap query; a cache entry is only ever used for the
version the registry names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socialads.errors import NoChampionError

if TYPE_CHECKING:
    from socialads.serving.fastpath import FastPredictor
    from socialads.settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOOKUP_TIMEOUT = 5.0


def champion_version_quick(settings: Settings) -> str | None:
    """The champion's version asked cheaply (REST or read-only SQL), or None when unknown.

    None means "ask MLflow itself" (another kind of store, or the quick query failed).
    Raises :class:`NoChampionError` when the local store certainly has no champion.
    """
    uri = settings.mlflow_uri
    try:
        if uri.startswith(("http://", "https://")):
            return _version_over_rest(uri, settings.model_name, settings.champion_alias)
        if uri.startswith("sqlite:///"):
            return _version_from_sqlite(
                Path(uri.removeprefix("sqlite:///")), settings.model_name, settings.champion_alias
            )
    except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
        log.debug("quick champion lookup failed: %s", exc)
    return None


def _version_over_rest(uri: str, name: str, alias: str) -> str | None:
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}"
    with urllib.request.urlopen(url, timeout=LOOKUP_TIMEOUT) as response:
        return str(json.load(response)["model_version"]["version"])


def _version_from_sqlite(path: Path, name: str, alias: str) -> str | None:
    if not path.exists():
        raise NoChampionError(_no_champion(f"sqlite:///{path}", name, alias))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=LOOKUP_TIMEOUT) as db:
        row = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (name, alias),
        ).fetchone()
    if row is None:
        raise NoChampionError(_no_champion(f"sqlite:///{path}", name, alias))
    return str(row[0])


def _no_champion(uri: str, name: str, alias: str) -> str:
    return f"no {alias!r} model of {name!r} in {uri} yet; run `socialads train` first"


def _entry(settings: Settings, version: str) -> Path:
    key = hashlib.sha256(f"{settings.mlflow_uri}\n{settings.model_name}".encode()).hexdigest()
    return settings.home / "cache" / "models" / key[:16] / f"v{version}"


def load_cached(settings: Settings, version: str) -> FastPredictor | None:
    """The cached compiled predictor of ``version``, or None."""
    import numpy as np

    from socialads.serving.fastpath import predictor_from_state

    entry = _entry(settings, version)
    meta, arrays = entry.with_suffix(".json"), entry.with_suffix(".npz")
    if not (meta.exists() and arrays.exists()):
        return None
    try:
        state = json.loads(meta.read_text())
        if state.pop("format") != FORMAT_VERSION:
            return None
        with np.load(arrays, allow_pickle=False) as data:
            return predictor_from_state(state, {k: data[k] for k in data.files})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable cache entry %s: %s", entry, exc)
        return None


def store(settings: Settings, version: str, predictor: FastPredictor) -> bool:
    """Cache a compiled predictor; False when its family cannot be stored as numbers."""
    import numpy as np

    from socialads.serving.fastpath import predictor_state

    try:
        state, arrays = predictor_state(predictor)
    except NotImplementedError:
        return False
    entry = _entry(settings, version)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Arrays first, metadata last: an entry without its .json is never read.
    tmp = entry.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(entry.with_suffix(".npz"))
    meta: dict[str, Any] = {"format": FORMAT_VERSION, **state}
    entry.with_suffix(".json").write_text(json.dumps(meta))
    return True

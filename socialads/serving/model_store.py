"""The model being served, and how it is (re)loaded without disturbing requests.

A :class:`ModelStore` holds one :class:`LoadedModel` (the champion plus its engine: ONNX
Runtime, or the scikit-learn Pipeline as fallback) in a plain attribute. Request handlers
read that attribute once and use what they got; a reload builds the next
:class:`LoadedModel` completely in a worker thread (registry I/O, deserialisation, the ONNX
Runtime session) and only then rebinds the attribute, which is atomic in Python. An
in-flight request therefore finishes on the model it started with, and a failed load leaves
the previous model in place.

A poller checks the champion alias every ``settings.reload_interval`` seconds with a cheap
call (:func:`socialads.models.registry.champion_version`) and loads only when the alias
moved; a version that fails to load is retried after a growing delay. Loads are
serialised by one lock (poller and ``POST /admin/reload``).

Starting without a model is the default on purpose: in the compose stack the API starts
before the first training has registered a champion, so it comes up, answers /health,
reports not-ready on /ready and loads the champion as soon as it appears.
``settings.require_model_at_start`` turns that into a failed start instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from socialads.data.schema import CLASSES, label_for
from socialads.errors import ModelNotReadyError, NoChampionError, RegistryError, SocialAdsError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from socialads.models.registry import ChampionModel
    from socialads.serving.engine import Engine, MicroBatcher
    from socialads.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[["Settings"], "ChampionModel"]
"""Loads the model to serve (default: the registry's champion)."""
Probe = Callable[["Settings"], "str | None"]
"""Cheaply tells which version the loader would load now (None: no champion)."""
SwapHook = Callable[["LoadedModel | None", "LoadedModel"], None]
MAX_RETRY_DELAY = 300.0
"""Seconds: the longest wait before loading again a version that failed to load."""


@dataclass(frozen=True)
class LoadedModel:
    """A champion ready to serve: its engine and pre-rendered JSON pieces."""

    champion: ChampionModel
    engine: Engine
    batcher: MicroBatcher
    """The engine behind /predict: concurrent one-record requests share its calls."""
    _heads: tuple[bytes, ...]
    _tail: bytes

    @classmethod
    def build(cls, champion: ChampionModel, settings: Settings) -> LoadedModel:
        """Start the champion's engine (slow: call it off the event loop)."""
        from socialads.serving.engine import MicroBatcher, build_engine

        def pipeline() -> Any:
            if champion.pipeline is not None:
                return champion.pipeline
            from socialads.models.registry import load_version
            from socialads.models.tracking import connect

            return load_version(connect(settings), settings, champion.version)

        heads = tuple(
            f'{{"prediction":{c},"label":{json.dumps(label_for(c))},"probability":'.encode()
            for c in CLASSES
        )
        tail = f',"model_version":{json.dumps(champion.version)},"request_id":"'.encode()
        engine = build_engine(champion.onnx, pipeline, champion.onnx_reason, settings.onnx_threads)
        return cls(champion, engine, MicroBatcher(engine), heads, tail)

    @property
    def version(self) -> str:
        """The registered version."""
        return self.champion.version

    def render(self, prediction: int, probability: float, request_id: str) -> bytes:
        """The /predict JSON body, without a serialiser (``repr`` of a float is valid JSON;
        a request id holds only characters JSON keeps as they are, see ``predlog.request_id``)."""
        return (
            self._heads[prediction]
            + repr(float(probability)).encode()
            + self._tail
            + request_id.encode()
            + b'"}'
        )

    def describe(self) -> dict[str, Any]:
        """What GET /model shows."""
        champion = self.champion
        return {
            "name": champion.name,
            "version": champion.version,
            "alias": champion.alias,
            "run_id": champion.run_id,
            "metrics": dict(champion.metrics),
            "loaded_at": champion.loaded_at.isoformat(),
            "engine": self.engine.name,
            "engine_reason": self.engine.reason,
            "estimator": self.engine.estimator,
        }


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one successful load attempt."""

    reloaded: bool
    version: str
    previous_version: str | None


class RegistrySource:
    """The default loader and probe: the champion alias of the MLflow registry."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None

    def _connect(self, settings: Settings) -> MlflowClient:
        if self._client is None:
            from socialads.models.tracking import connect

            try:
                self._client = connect(settings)
            except Exception as exc:  # whatever MLflow raises for a bad URI or store
                raise RegistryError(f"connecting to {settings.mlflow_uri} failed: {exc}") from exc
        return self._client

    def load(self, settings: Settings) -> ChampionModel:
        """The champion with its metadata (raises NoChampionError / RegistryError)."""
        from socialads.models.registry import load_champion

        return load_champion(settings, self._connect(settings))

    def probe(self, settings: Settings) -> str | None:
        """The champion's version, or None."""
        from socialads.models.registry import champion_version

        current = champion_version(self._connect(settings), settings)
        return None if current is None else str(current.version)


class ModelStore:
    """Holds the served model; loads, reloads and polls for a new champion.

    ``loader``/``probe`` default to the MLflow registry. With a custom loader and no probe
    the poller only retries until a first model is loaded; later reloads are explicit
    (:meth:`reload`, ``POST /admin/reload``).
    """

    def __init__(
        self,
        settings: Settings,
        loader: Loader | None = None,
        probe: Probe | None = None,
        *,
        on_swap: SwapHook | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        if loader is None:
            source = RegistrySource()
            loader, probe = source.load, probe or source.probe
        self.settings = settings
        self.current: LoadedModel | None = None
        """The served model; read it once per request."""
        self.last_error: str | None = None
        """Why the last load or check failed (None after a success)."""
        self._loader = loader
        self._probe = probe
        self._on_swap = on_swap
        self._on_outcome = on_outcome
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._recorded: BaseException | None = None
        # A version whose load failed is retried with a growing delay, not at every poll.
        self._failed_version: str | None = None
        self._failures = 0
        self._retry_at = 0.0

    def require(self) -> LoadedModel:
        """The served model; raises ModelNotReadyError (with the reason) before the first load."""
        model = self.current
        if model is None:
            raise ModelNotReadyError(self.last_error or "the first load is in progress")
        return model

    # -- loading ------------------------------------------------------------------------------
    def load_blocking(self) -> LoadedModel:
        """Load with the loader and start the engine, in the calling thread."""
        return LoadedModel.build(self._loader(self.settings), self.settings)

    def install(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on (one attribute rebinding: atomic for readers)."""
        previous = self.current
        self.current = model
        self.last_error = None
        if self._on_swap is not None:
            self._on_swap(previous, model)
        log.info(
            "serving %s version %s (%s on %s)%s",
            model.champion.name,
            model.version,
            model.engine.estimator,
            model.engine.name,
            f", was version {previous.version}" if previous is not None else "",
        )

    def _fetch(self, force: bool) -> tuple[LoadedModel | None, str]:
        """Thread body: load; start an engine only if the version changed (or ``force``)."""
        champion = self._loader(self.settings)
        current = self.current
        if current is not None and champion.version == current.version and not force:
            return None, champion.version
        return LoadedModel.build(champion, self.settings), champion.version

    async def _reload_locked(self, force: bool) -> ReloadResult:
        previous = self.current
        try:
            model, version = await asyncio.to_thread(self._fetch, force)
        except Exception as exc:
            self._failed(exc)
            raise
        if model is None:
            self._outcome("unchanged")
            self.last_error = None
            return ReloadResult(False, version, version)
        self.install(model)
        self._outcome("loaded")
        return ReloadResult(True, model.version, previous.version if previous else None)

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def reload(self, *, force: bool = False) -> ReloadResult:
        """Load the loader's current model and serve it if its version differs.

        Raises what the loader raised (the previous model keeps serving).
        """
        async with self._get_lock():
            return await self._reload_locked(force)

    async def poll_once(self) -> ReloadResult | None:
        """One poller step: first load, or a cheap check and a load when the alias moved."""
        async with self._get_lock():
            current = self.current
            if current is None:
                return await self._reload_locked(False)
            if self._probe is None:
                return None
            try:
                version = await asyncio.to_thread(self._probe, self.settings)
            except Exception as exc:
                self._failed(exc)
                raise
            if version is None:
                self._note(
                    f"the {self.settings.champion_alias!r} alias is gone; "
                    f"still serving version {current.version}"
                )
                return None
            if version == current.version:
                self.last_error = None
                return None
            if version == self._failed_version and time.monotonic() < self._retry_at:
                return None
            log.info("champion moved to version %s; loading it", version)
            try:
                result = await self._reload_locked(False)
            except Exception:
                self._back_off(version)
                raise
            self._failed_version, self._failures = None, 0
            return result

    # -- the poller ---------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        interval = self.settings.reload_interval
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # the poller must outlive any failure of one step
                if exc is not self._recorded:  # load failures were logged by _failed
                    log.exception("the model poller step failed")
            await asyncio.sleep(interval)

    def start(self) -> None:
        """Start the poller on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._poll_forever(), name="socialads-model-poller"
            )

    async def stop(self) -> None:
        """Stop the poller (a load already in its thread finishes in the background)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- bookkeeping --------------------------------------------------------------------------
    def _back_off(self, version: str) -> None:
        """Retry a version that failed to load after 2, 4, 8 ... intervals (at most 5 min)."""
        self._failures = self._failures + 1 if version == self._failed_version else 1
        self._failed_version = version
        delay = min(self.settings.reload_interval * 2**self._failures, MAX_RETRY_DELAY)
        self._retry_at = time.monotonic() + delay

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _note(self, message: str, *, exc_info: BaseException | None = None) -> None:
        """Record why the store is not (or no longer) up to date; log each new reason once."""
        if message != self.last_error:
            log.warning("%s", message, exc_info=exc_info)
        self.last_error = message

    def _failed(self, exc: Exception) -> None:
        self._recorded = exc
        self._outcome("failed")
        current = self.current
        keep = f"; still serving version {current.version}" if current is not None else ""
        retry = f"; retrying every {self.settings.reload_interval:g} s"
        if isinstance(exc, NoChampionError):
            self._note(f"{exc}{keep}{retry}")
        elif isinstance(exc, SocialAdsError):
            self._note(f"loading the model failed: {exc}{keep}{retry}")
        else:
            self._note(
                f"loading the model failed unexpectedly: {type(exc).__name__}: {exc}{keep}",
                exc_info=exc,
            )

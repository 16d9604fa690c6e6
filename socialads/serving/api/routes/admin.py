"""POST /admin/reload: load the champion now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from socialads.errors import NoChampionError, SocialAdsError
from socialads.serving.api import errors
from socialads.serving.api.deps import StoreDep
from socialads.serving.schemas import ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        **errors.BAD_INPUT,
        **errors.documented(500, "The load failed unexpectedly"),
        **errors.documented(502, "The registry failed; nothing changed"),
        **errors.documented(503, "No champion in the registry"),
    },
)
async def admin_reload(
    store: StoreDep,
    force: Annotated[bool, Query(description="Reload even if the version did not change.")] = False,
) -> JSONResponse:
    """Load the champion now; serve it if its version differs (or with ``force``).

    A failed load changes nothing: the current model keeps serving. With several
    workers only the worker that answers reloads; the others follow at their next poll.
    """
    previous = store.current
    keep = f"; still serving version {previous.version}" if previous else ""
    try:
        result = await store.reload(force=force)
    except NoChampionError as exc:
        raise errors.ApiError(503, "no_champion", f"{exc}{keep}") from None
    except SocialAdsError as exc:
        raise errors.ApiError(502, "registry_error", f"reload failed: {exc}{keep}") from None
    except Exception as exc:  # logged by the store with its traceback
        detail = f"reload failed: {type(exc).__name__}: {exc}{keep}"
        raise errors.ApiError(500, "reload_failed", detail) from None
    detail = (
        f"now serving version {result.version}"
        if result.reloaded
        else f"version {result.version} is already served"
    )
    return JSONResponse(
        {
            "reloaded": result.reloaded,
            "version": result.version,
            "previous_version": result.previous_version,
            "detail": detail,
        }
    )

"""``/v1/opt-outs``: list the stakeholders who opted out, and undo one opt-out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from scheduler.web._http import SafeJSONResponse
from scheduler.web.auth import require_reader, require_token
from scheduler.web.deps import WebDep

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/opt-outs", dependencies=[Depends(require_reader)])
def list_opt_outs(web: WebDep) -> JSONResponse:
    """Every opt-out: from one incident's mail (``stakeholder:incident``) or from all."""
    return SafeJSONResponse({"opt_outs": [o.as_json() for o in web.store.opt_outs()]})


@router.delete("/v1/opt-outs/{opt_out}", dependencies=[Depends(require_token)])
def undo_opt_out(opt_out: str, web: WebDep) -> JSONResponse:
    """Undo one opt-out: the stakeholder receives that mail again."""
    if not web.store.remove_opt_out(opt_out):
        raise HTTPException(404, f"no opt-out {opt_out!r}")
    return SafeJSONResponse({"removed": opt_out})

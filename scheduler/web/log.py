"""``/v1/communications``: the communications log, a page at a time, and one message as sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from scheduler.core.model import Kind, Status
from scheduler.core.ports import format_cursor
from scheduler.core.promises import LogFilter
from scheduler.mail.signing import withhold_signatures
from scheduler.web._http import SafeJSONResponse, invalid, page_window
from scheduler.web.auth import require_reader
from scheduler.web.deps import WebDep
from scheduler.web.sessions import Role

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/communications", dependencies=[Depends(require_reader)])
def communications(
    web: WebDep,
    incident: str | None = None,
    stakeholder: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    since: str | None = None,
    limit: int = Query(100, ge=1, le=1_000),
    cursor: str | None = None,
) -> JSONResponse:
    """The log, newest first, one page of ``limit``; ``next_cursor`` (null on the last
    page) is passed back as ``cursor`` for the next one. Fields as ``amends log --json``."""
    errors: list[tuple[str, str]] = []
    after, since_at = page_window(cursor, since, web.clock(), errors)
    if kind is not None and kind not in set(Kind):
        errors.append(("kind", f"must be one of {', '.join(Kind)}"))
    if status is not None and status not in set(Status):
        errors.append(("status", f"must be one of {', '.join(Status)}"))
    if errors:
        return invalid(errors)
    keep = LogFilter(incident, stakeholder, kind, status)
    found, following = web.store.page(keep.keeps, limit, after, since_at)
    return SafeJSONResponse(
        {
            "communications": [c.as_json() for c in found],
            "next_cursor": format_cursor(following) if following else None,
        }
    )


@router.get("/v1/communications/{comm_id}")
def communication(comm_id: str, web: WebDep, role: Annotated[Role, Depends(require_reader)]) -> JSONResponse:
    """One communication with the full message as sent, headers included; for the read
    token, with its action links' signatures withheld."""
    comm = web.store.comm(comm_id)
    if comm is None:
        raise HTTPException(404, f"no communication {comm_id!r}")
    message = (
        comm.message if role is Role.WRITE or comm.message is None else withhold_signatures(comm.message)
    )
    return SafeJSONResponse({**comm.as_json(), "message": message})

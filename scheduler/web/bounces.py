"""``/v1/bounces``: take a delivery status notification, list undeliverable addresses, lift a mark."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from scheduler.core.bounces import BounceSource
from scheduler.mail.bounce_reports import read_report
from scheduler.storage.bounces import RedisBounceList
from scheduler.web._http import SafeJSONResponse, invalid, read_capped
from scheduler.web.auth import require_reader, require_token
from scheduler.web.deps import Web, WebDep

__all__ = ["MAX_REPORT_BYTES", "bounce_metrics", "router"]

MAX_REPORT_BYTES = 1024 * 1024
"""The largest report ``POST /v1/bounces`` reads; over it the answer is 413."""

router = APIRouter()


def _marked(web: Web, permanent: dict[str, str]) -> list[str]:
    bounces, now = RedisBounceList(web.client), web.clock()
    return [a for a, reason in permanent.items() if bounces.mark(a, reason, BounceSource.REPORT, now)]


@router.post("/v1/bounces", dependencies=[Depends(require_token)])
async def post_bounce(request: Request, web: WebDep) -> JSONResponse:
    """Read a raw delivery status notification (RFC 3464) and mark each recipient it says
    failed for good as undeliverable; delays mark nothing. 422 when it reports no failure."""
    body = await read_capped(request, MAX_REPORT_BYTES)
    if body is None:
        raise HTTPException(
            413, f"the report is larger than {MAX_REPORT_BYTES} bytes; nothing was read further"
        )
    try:
        report = read_report(body)
    except ValueError as e:
        return invalid([("body", str(e))])
    newly = await run_in_threadpool(_marked, web, report.permanent)
    return SafeJSONResponse(
        {"undeliverable": sorted(report.permanent), "newly_marked": newly, "delayed": report.temporary}
    )


@router.get("/v1/bounces", dependencies=[Depends(require_reader)])
def list_bounces(web: WebDep) -> JSONResponse:
    """Every undeliverable address, newest first, with why and since when."""
    return SafeJSONResponse({"bounces": [m.as_json() for m in RedisBounceList(web.client).newest()]})


@router.delete("/v1/bounces/{address}", dependencies=[Depends(require_token)])
def remove_bounce(address: str, web: WebDep) -> JSONResponse:
    """Lift an address's mark: mail is sent to it again."""
    if not RedisBounceList(web.client).remove(address):
        raise HTTPException(404, f"{address!r} is not marked undeliverable")
    return SafeJSONResponse({"removed": address})


def bounce_metrics(web: Web) -> str:
    """``/metrics`` lines: how many addresses are marked undeliverable."""
    return (
        "# HELP amends_undeliverable_addresses Addresses marked undeliverable: mail to them is suppressed.\n"
        "# TYPE amends_undeliverable_addresses gauge\n"
        f"amends_undeliverable_addresses {RedisBounceList(web.client).count()}\n"
    )

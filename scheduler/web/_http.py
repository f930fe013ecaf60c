"""What every HTTP route of the API shares: safe responses and bodies read within limits."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from scheduler.core._validation import bounded_duration_s
from scheduler.core.ports import Cursor, parse_cursor
from scheduler.core.text import scrub
from scheduler.web.deps import Web
from scheduler.web.pages import render_notice

__all__ = [
    "HTML_HEADERS",
    "MAX_FORM_BYTES",
    "MAX_FORM_FIELDS",
    "SafeJSONResponse",
    "cross_site",
    "forbidden",
    "https_site",
    "invalid",
    "page",
    "page_window",
    "read_capped",
    "read_form",
    "unanswered",
]

MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 20
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: text the store holds that UTF-8 cannot carry (a lone
    surrogate kept before it was refused at the door) is sent as U+FFFD."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
        return scrub(text).encode("utf-8")


def invalid(errors: Iterable[tuple[str, str]]) -> SafeJSONResponse:
    return SafeJSONResponse({"errors": [{"field": f, "reason": r} for f, r in errors]}, status_code=422)


def page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(scrub(html), status_code=status_code, headers=HTML_HEADERS)


def forbidden() -> HTMLResponse:
    return page(
        render_notice(
            "This link does not work",
            "The link is incomplete or was altered. Please use the link exactly as it came in our email.",
            error=True,
        ),
        403,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def cross_site(request: Request, web: Web) -> bool:
    """Whether a form was posted from another site's page: its ``Origin`` (or, without one,
    its ``Referer``) is neither this server's address nor the configured ``base_url``.
    A POST that names neither (a mail client's one-click unsubscribe), or names the opaque
    origin ``null``, is not judged here: the form's CSRF value or signature decides."""
    given = request.headers.get("origin") or _origin(request.headers.get("referer", ""))
    if not given or given == "null":  # our pages' no-referrer policy makes browsers send "null"
        return False
    config = web.config()
    ours = {_origin(str(request.base_url)), _origin(config.base_url) if config else ""}
    return given.lower() not in ours - {""}


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def https_site(request: Request, web: Web) -> bool:
    """Whether the browser reaches the server over HTTPS, so cookies are sent ``Secure``:
    the request came so, or ``base_url`` is https (TLS ends at a proxy in front) and the
    request is not plain HTTP to a loopback address (a tunnel, the demo), where a browser
    would drop a ``Secure`` cookie and signing in could never work."""
    if request.url.scheme == "https":
        return True
    config = web.config()
    behind_tls = bool(config and config.base_url.lower().startswith("https:"))
    return behind_tls and (request.url.hostname or "").lower() not in _LOOPBACK


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def read_form(request: Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body as {name: last value}; None when it
    cannot be read as one (a reason for 400). Over MAX_FORM_BYTES it is 413 at once
    (HTTPException), before any signature or token is looked at."""
    body = await read_capped(request, MAX_FORM_BYTES)
    if body is None:
        raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes; nothing was read further")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):  # a form body is percent-encoded ASCII; too many fields
        return None
    return {name: scrub(value) for name, value in pairs}


def unanswered(error: BaseException) -> str:
    """Which store of queued events did not answer: "RabbitMQ did not answer" or Redis."""
    from scheduler.service.queues import BrokerUnavailableError

    return "RabbitMQ did not answer" if isinstance(error, BrokerUnavailableError) else "Redis did not answer"


def page_window(
    cursor: str | None, since: str | None, now: datetime, errors: list[tuple[str, str]]
) -> tuple[Cursor | None, datetime | None]:
    """A list's ``cursor`` (where the page before ended) and ``since`` (``2h``, ``7d``) as a
    cursor and a moment; what cannot be read is added to ``errors`` with its parameter."""
    after = start = None
    try:
        after = parse_cursor(cursor) if cursor is not None else None
    except ValueError as e:
        errors.append(("cursor", str(e)))
    try:
        start = now - timedelta(seconds=bounded_duration_s(since)) if since is not None else None
    except (ValueError, OverflowError) as e:
        errors.append(("since", str(e)))
    return after, start

"""Who may do what: the API token, the read-only token, and the review page's cookie sign-in.

Posting events and undoing opt-outs need ``Authorization: Bearer $AMENDS_API_TOKEN``;
reading takes that token or ``$AMENDS_READ_TOKEN``. The review page also takes a cookie:
its sign-in form POSTs the token, which is exchanged for a cookie derived from the token
(HttpOnly, SameSite=Strict), so a token never appears in a URL.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from scheduler.mail.signing import sign
from scheduler.web._http import page, read_form
from scheduler.web.deps import Web, WebDep
from scheduler.web.pages import render_sign_in

__all__ = ["REVIEW_COOKIE", "can_read", "require_reader", "require_token", "review_session", "router"]

REVIEW_COOKIE = "amends_review"

router = APIRouter()


def review_session(secret: str, token: str) -> str:
    """The review cookie's value for a reader's token."""
    return sign(secret, "review-session", token)


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> HTTPException:
    return HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def can_read(request: Request, web: Web, *, cookie: bool = False) -> bool:
    """Whether the request carries a reader's bearer token (or, with ``cookie``, the review cookie)."""
    if web.token is None:
        return True
    given = _bearer(request)
    session = request.cookies.get(REVIEW_COOKIE) if cookie else None
    return any(_matches(given, t) for t in web.readers) or any(_matches(session, s) for s in web.sessions)


def require_token(request: Request, web: WebDep) -> None:
    """The API token: it may post events and change opt-outs."""
    if web.token is not None and not _matches(_bearer(request), web.token):
        raise _unauthorized()


def require_reader(request: Request, web: WebDep) -> None:
    """The API token or the read-only token."""
    if not can_read(request, web):
        raise _unauthorized()


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(request: Request, web: WebDep) -> Response:
    """The sign-in form: a valid token becomes a cookie, and the browser goes to ``/``."""
    form = await read_form(request)
    given = (form or {}).get("token", "")
    if web.token is not None and not any(_matches(given, t) for t in web.readers):
        return page(render_sign_in("That token is not right."), 401)
    signed_in = RedirectResponse("/", status_code=303)
    if web.token is not None:
        signed_in.set_cookie(
            REVIEW_COOKIE,
            review_session(web.secret, given),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return signed_in


@router.post("/signout", response_class=HTMLResponse)
def sign_out() -> Response:
    signed_out = RedirectResponse("/", status_code=303)
    signed_out.delete_cookie(REVIEW_COOKIE, httponly=True, samesite="strict")
    return signed_out

"""Who may do what: the API token, the read-only token, and the review page's sign-in.

Posting events and undoing opt-outs need ``Authorization: Bearer $AMENDS_API_TOKEN``;
reading takes that token or ``$AMENDS_READ_TOKEN``. The review page also takes a cookie:
its sign-in form POSTs the token, which starts a server-side session
(:mod:`.sessions`: a random id in Redis that expires after 12 hours, ends on sign-out
and when the token is rotated); the cookie carries only that id (HttpOnly,
SameSite=Strict, Secure when ``base_url`` is https), so a token never appears in a URL.

Every form of the review page carries a CSRF value: the sign-in form's is bound to a
random cookie set with the form (so another site cannot sign a browser in with its own
token), the sign-out form's to the session; a POST whose ``Origin`` is another site's is
refused as well.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler.mail.signing import sign, verify
from scheduler.web import sessions
from scheduler.web._http import cross_site, https_site, page, read_form
from scheduler.web.deps import Web, WebDep
from scheduler.web.pages import render_sign_in
from scheduler.web.sessions import Role

__all__ = [
    "REVIEW_COOKIE",
    "SIGN_IN_COOKIE",
    "caller_role",
    "can_read",
    "require_reader",
    "require_token",
    "router",
    "sign_in_page",
    "sign_out_csrf",
]

REVIEW_COOKIE = "amends_review"
"""The session id of a signed-in browser."""
SIGN_IN_COOKIE = "amends_sign_in"
"""A random value set with the sign-in form; the form's CSRF field is signed over it."""

router = APIRouter()


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _unauthorized() -> HTTPException:
    return HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def _role_of_token(web: Web, given: str | None) -> Role | None:
    if web.token is not None and _matches(given, web.token):
        return Role.WRITE
    return Role.READ if any(_matches(given, t) for t in web.readers) else None


def _session(request: Request, web: Web) -> sessions.Session | None:
    """The signed-in session the cookie names, if it is still valid under today's tokens."""
    found = sessions.find(web.client, request.cookies.get(REVIEW_COOKIE, ""))
    if found is None:
        return None
    # valid while the token it was made with still holds the role it was given
    held = {role for fp, role in web.fingerprints if _matches(found.fingerprint, fp)}
    return found if found.role in held else None


def caller_role(request: Request, web: Web, *, cookie: bool = False) -> Role | None:
    """What the request may do: by its bearer token, or (with ``cookie``) its review
    session; None when it carries neither. In the demo (no token set) everything is open."""
    if web.token is None:
        return Role.WRITE
    role = _role_of_token(web, _bearer(request))
    if role is None and cookie:
        session = _session(request, web)
        role = session.role if session else None
    return role


def can_read(request: Request, web: Web, *, cookie: bool = False) -> bool:
    """Whether the request carries a reader's bearer token (or, with ``cookie``, a review session)."""
    return caller_role(request, web, cookie=cookie) is not None


def require_token(request: Request, web: WebDep) -> None:
    """The API token: it may post events and change opt-outs."""
    if web.token is not None and not _matches(_bearer(request), web.token):
        raise _unauthorized()


def require_reader(request: Request, web: WebDep) -> Role:
    """The API token or the read-only token; what it may do."""
    role = caller_role(request, web)
    if role is None:
        raise _unauthorized()
    return role


def sign_in_page(web: Web, error: str = "", status_code: int = 401) -> Response:
    """The sign-in form with a fresh CSRF value, and the cookie it is bound to."""
    nonce = secrets.token_urlsafe(24)
    response = page(render_sign_in(error, csrf=sign(web.secret, "sign-in", nonce)), status_code)
    response.set_cookie(SIGN_IN_COOKIE, nonce, httponly=True, samesite="strict", path="/signin")
    return response


def sign_out_csrf(request: Request, web: Web) -> str:
    """The sign-out form's CSRF value for this browser's session ("" without one)."""
    session_id = request.cookies.get(REVIEW_COOKIE, "")
    return sign(web.secret, "sign-out", session_id) if session_id else ""


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(request: Request, web: WebDep) -> Response:
    """The sign-in form: a valid token starts a session, and the browser goes to ``/``.
    The form must come from this site's own sign-in page (its CSRF value), or it is 403."""
    if cross_site(request, web):
        return sign_in_page(web, "Sign in from this site's own page.", 403)
    form = await read_form(request)
    if form is None:
        return sign_in_page(web, "The form could not be read; please try again.", 400)
    nonce = request.cookies.get(SIGN_IN_COOKIE, "")
    if not nonce or not verify(web.secret, form.get("csrf", ""), "sign-in", nonce):
        return sign_in_page(web, "The sign-in form had expired; please try again.", 403)
    given = form.get("token", "")
    role = _role_of_token(web, given)
    if web.token is not None and role is None:
        return sign_in_page(web, "That token is not right.")
    signed_in = RedirectResponse("/", status_code=303)
    signed_in.delete_cookie(SIGN_IN_COOKIE, path="/signin", httponly=True, samesite="strict")
    if web.token is not None and role is not None:
        session = sessions.Session(role, sessions.fingerprint(web.secret, given))
        session_id = await run_in_threadpool(sessions.start, web.client, session)
        signed_in.set_cookie(
            REVIEW_COOKIE,
            session_id,
            max_age=sessions.SESSION_TTL_S,
            httponly=True,
            samesite="strict",
            secure=https_site(request, web),
        )
    return signed_in


@router.post("/signout", response_class=HTMLResponse)
async def sign_out(request: Request, web: WebDep) -> Response:
    """Ends the session (its cookie opens nothing any more, even replayed), then goes to ``/``.
    The form carries the session's CSRF value; without it nothing is ended (403)."""
    session_id = request.cookies.get(REVIEW_COOKIE, "")
    form = await read_form(request)
    if session_id and (
        cross_site(request, web)
        or not verify(web.secret, (form or {}).get("csrf", ""), "sign-out", session_id)
    ):
        return sign_in_page(web, "Sign out from the review page's own button.", 403)
    await run_in_threadpool(sessions.end, web.client, session_id)
    signed_out = RedirectResponse("/", status_code=303)
    signed_out.delete_cookie(REVIEW_COOKIE, httponly=True, samesite="strict", secure=https_site(request, web))
    return signed_out

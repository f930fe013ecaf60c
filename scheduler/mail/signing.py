"""HMAC signatures: links that work for one stakeholder of one incident only, webhooks
amends sends (Standard Webhooks) and webhooks it receives (PagerDuty).

A link's signature covers a structure, not a joined string: a version tag, then each part
(the purpose first) prefixed by its length, so no two different part lists are signed
alike however the parts are re-split. Links signed before that (parts joined by U+001F)
are still accepted by :func:`verify_link` for the ids they name; the routes check that
those ids are a configured stakeholder and a known incident before anything is stored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from urllib.parse import quote, urlencode

__all__ = [
    "check_webhook_secret",
    "feedback_links",
    "feedback_page_link",
    "pagerduty_signature_valid",
    "sign",
    "standard_webhook_signature",
    "unsubscribe_link",
    "verify",
    "verify_link",
    "withhold_signatures",
]

_WHSEC = "whsec_"


def check_webhook_secret(secret: str) -> bytes:
    """The key in a Standard Webhooks secret (``whsec_`` + base64); ValueError saying what is wrong."""
    if not secret.startswith(_WHSEC):
        raise ValueError("must start with whsec_ followed by base64, e.g. whsec_ + 24 to 64 random bytes")
    try:
        key = base64.b64decode(secret[len(_WHSEC) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not base64") from None
    if len(key) < 24 or len(key) > 64:
        raise ValueError(f"the key is {len(key)} bytes; Standard Webhooks keys are 24 to 64 bytes")
    return key


def standard_webhook_signature(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64 HMAC-SHA256 of
    ``{id}.{timestamp}.{body}`` keyed with the secret's bytes (Standard Webhooks)."""
    key = check_webhook_secret(secret)
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def pagerduty_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``X-PagerDuty-Signature`` holds a ``v1=`` HMAC-SHA256 of ``body`` under ``secret``.

    The header may list several signatures (``v1=…,v1=…``, while a secret is rotated); one
    match is enough.
    """
    if not secret or not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    found = False
    for part in header.split(","):
        version, _, value = part.strip().partition("=")
        if version == "v1" and hmac.compare_digest(
            expected, value.strip().lower().encode("utf-8", "replace")
        ):
            found = True
    return found


_VERSION = b"amends-signature-v2"
"""Tags every signature made now; a change of the structure below changes this tag."""


def _structure(parts: tuple[str, ...]) -> bytes:
    """The version tag, then each part's UTF-8 length (4 bytes, big-endian) and bytes."""
    encoded = [p.encode("utf-8", "surrogatepass") for p in parts]
    return _VERSION + b"".join(len(e).to_bytes(4, "big") + e for e in encoded)


def sign(secret_key: str, purpose: str, *parts: str) -> str:
    """The signature of ``parts`` for ``purpose`` (``unsubscribe``, ``feedback``, …):
    32 hex digits of an HMAC-SHA256 over the length-prefixed parts."""
    signer = _keyed(secret_key).copy()
    signer.update(_structure((purpose, *parts)))
    return signer.hexdigest()[:32]


def _joined(secret_key: str, *parts: str) -> str:
    """A signature as links sent before the length-prefixed structure carried it."""
    signer = _keyed(secret_key).copy()
    signer.update("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return signer.hexdigest()[:32]


@functools.lru_cache(maxsize=16)
def _keyed(secret_key: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret_key`` and fed nothing yet: copied for each
    signature, so the key is prepared once rather than for every link of every message."""
    return hmac.new(secret_key.encode(), digestmod=hashlib.sha256)


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def verify(secret_key: str, signature: str, purpose: str, *parts: str) -> bool:
    """Whether ``signature`` signs ``parts`` for ``purpose``; any text (even non-ASCII) is safe to pass."""
    return _same(sign(secret_key, purpose, *parts), signature)


def verify_link(secret_key: str, signature: str, purpose: str, *parts: str) -> bool:
    """:func:`verify`, or the signature a link sent before the current structure carries
    (so that mail already delivered keeps working); the caller checks the ids are known."""
    if verify(secret_key, signature, purpose, *parts):
        return True
    if any("\x1f" in p for p in parts):  # such a part could only come from a re-split
        return False
    return _same(_joined(secret_key, purpose, *parts), signature)


_SOFT = r"(?:=\r?\n)?"
_SIGNED = re.compile(
    rf"(s{_SOFT}i{_SOFT}g{_SOFT}(?:=3D|%3[Dd]|=(?!\r?\n)){_SOFT})((?:[0-9a-f]|=\r?\n)*[0-9a-f])"
)
"""A link's ``sig`` value: plain, URL-encoded, or in quoted-printable text, where a soft
line break (``=`` at the end of a line) may fall anywhere in ``sig=`` or in the value."""
_WITHHELD = "WITHHELD"


def withhold_signatures(text: str) -> str:
    """``text`` with every link signature replaced by ``WITHHELD…`` of the same length (so
    quoted-printable lines keep their shape): the links it shows no longer act for anyone."""

    def inert(found: re.Match[str]) -> str:
        value, count = [], 0
        for piece in re.split(r"(=\r?\n)", found.group(2)):
            if piece.startswith("="):
                value.append(piece)
                continue
            value.append("".join(_WITHHELD[(count + i) % len(_WITHHELD)] for i in range(len(piece))))
            count += len(piece)
        return found.group(1) + "".join(value)

    return _SIGNED.sub(inert, text)


def _feedback_base(base_url: str, incident_id: str, stakeholder_id: str) -> str:
    return f"{base_url.rstrip('/')}/feedback/{quote(incident_id, safe='')}/{quote(stakeholder_id, safe='')}"


def feedback_links(base_url: str, secret_key: str, incident_id: str, stakeholder_id: str) -> dict[int, str]:
    """One link per rating 1-5, each signed over (incident, stakeholder, rating): an altered
    incident, stakeholder or rating no longer verifies."""
    base = _feedback_base(base_url, incident_id, stakeholder_id)
    # a digit and a hex signature: what urlencode would write, without its quoting work
    return {
        rating: f"{base}?rating={rating}&sig={sign(secret_key, 'feedback', incident_id, stakeholder_id, str(rating))}"
        for rating in range(1, 6)
    }


def feedback_page_link(base_url: str, secret_key: str, incident_id: str, stakeholder_id: str) -> str:
    """The feedback page without a rating chosen (rating and comment on the page)."""
    signature = sign(secret_key, "feedback-page", incident_id, stakeholder_id)
    return f"{_feedback_base(base_url, incident_id, stakeholder_id)}?{urlencode({'sig': signature})}"


def unsubscribe_link(
    base_url: str, secret_key: str, stakeholder_id: str, incident_id: str | None = None
) -> str:
    """The stakeholder's unsubscribe page; with ``incident_id`` it also offers to stop only
    that incident's mail. Signed over the stakeholder (and the incident, when given)."""
    parts = (stakeholder_id, incident_id) if incident_id else (stakeholder_id,)
    query = {"incident": incident_id} if incident_id else {}
    query["sig"] = sign(secret_key, "unsubscribe", *parts)
    return f"{base_url.rstrip('/')}/unsubscribe/{quote(stakeholder_id, safe='')}?{urlencode(query)}"

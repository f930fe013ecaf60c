"""DKIM signatures (RFC 6376) with dkimpy: the signature becomes part of the message as sent and logged."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import dkim
from aiosmtplib.email import extract_recipients, extract_sender
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from scheduler.errors import SettingsError
from scheduler.mail.mime import ComposedEmail, written_header

__all__ = ["SIGNED_HEADERS", "DkimKey", "sign_email"]

SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
"""What the signature covers, those of them the message has: what a reader sees and what
a mail client acts on (RFC 8058 asks for both List-Unsubscribe headers to be signed)."""

_SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class DkimKey:
    """``AMENDS_DKIM_KEY`` (a PEM RSA private key file) and ``AMENDS_DKIM_SELECTOR``."""

    selector: str
    path: Path
    pem: bytes = field(repr=False)

    @classmethod
    def from_env(cls, key_path: str | None, selector: str | None) -> DkimKey | None:
        """The key named by the two settings, checked now; None when neither is set."""
        if not key_path and not selector:
            return None
        if not key_path or not selector:
            missing = "AMENDS_DKIM_KEY" if not key_path else "AMENDS_DKIM_SELECTOR"
            raise SettingsError(
                f"{missing} is not set: DKIM signing needs both AMENDS_DKIM_KEY (a PEM private key "
                "file) and AMENDS_DKIM_SELECTOR (the selector its public key is published under)"
            )
        if not _SELECTOR.match(selector):
            raise SettingsError(
                f"AMENDS_DKIM_SELECTOR={selector!r} is not a DNS name: letters, digits and hyphens, "
                "dot-separated labels (e.g. 'amends2026')"
            )
        path = Path(key_path)
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise SettingsError(
                f"AMENDS_DKIM_KEY={key_path}: cannot read the key file: {e.strerror}"
            ) from None
        try:
            parse_pem_private_key(pem)
        except (UnparsableKeyError, ValueError, IndexError) as e:
            raise SettingsError(
                f"AMENDS_DKIM_KEY={key_path} is not a PEM RSA private key ({e}); make one with "
                "'openssl genrsa -out dkim.pem 2048'"
            ) from None
        return cls(selector, path, pem)


def sign_email(message: EmailMessage, key: DkimKey) -> ComposedEmail:
    """``message`` with a ``DKIM-Signature`` header on top, for the domain of its From address.

    What is sent and logged is the signed text (``as_string()``), byte for byte; relaxed
    canonicalisation lets the signature survive relays that re-fold headers or whitespace.
    """
    wire = message.as_string()
    domain = parseaddr(written_header(message, "From") or "")[1].rpartition("@")[2]
    present = {name.lower() for name, _ in message.raw_items()}
    signature = dkim.sign(
        wire.encode("utf-8"),
        key.selector.encode("ascii"),
        domain.encode("idna"),
        key.pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.lower().encode("ascii") for h in SIGNED_HEADERS if h.lower() in present],
    ).decode("ascii")
    name, _, value = signature.partition(": ")
    envelope = message.envelope() if isinstance(message, ComposedEmail) else None
    sender, recipients = envelope or (extract_sender(message) or "", extract_recipients(message))
    signed = ComposedEmail(signature + wire, sender, recipients[0] if recipients else "")
    signed.set_raw(name, value.rstrip("\r\n"))
    for header, header_value in message.raw_items():
        signed.set_raw(header, header_value)
    signed.set_payload(message.get_payload())
    signed.seal()
    return signed

"""Reading a delivery status notification (RFC 3464, or a relay's own bounce format) with flufl.bounce."""

from __future__ import annotations

import email
import logging
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr

from flufl.bounce import all_failures

from scheduler.core.bounces import address_key

__all__ = ["BounceReport", "read_report"]

logger = logging.getLogger(__name__)

_MAX_ADDRESS = 254


@dataclass(frozen=True)
class BounceReport:
    """The recipients a report says failed for good (``permanent``, each with the reason it
    gives) and those it says are only delayed (``temporary``)."""

    permanent: dict[str, str]
    temporary: list[str]


def _addresses(found: frozenset[bytes] | set[bytes]) -> list[str]:
    """Plausible addresses only: a detector's heuristics may pick up stray text."""
    kept = []
    for raw in found:
        text = raw.decode("ascii", errors="replace").strip()
        if "@" in text and len(text) <= _MAX_ADDRESS and text.isprintable() and " " not in text:
            kept.append(address_key(text))
    return sorted(set(kept))


def _diagnoses(report: Message) -> dict[str, str]:
    """Each failed recipient's ``Status`` and ``Diagnostic-Code``, as the report states them."""
    found: dict[str, str] = {}
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            recipient = str(block.get("Final-Recipient", "")).partition(";")[2] or ""
            said = [f"{name} {block[name]}" for name in ("Status", "Diagnostic-Code") if block.get(name)]
            if recipient and said:
                found[address_key(parseaddr(recipient)[1])] = "; ".join(" ".join(s.split()) for s in said)
    return found


def read_report(raw: bytes) -> BounceReport:
    """The failures ``raw`` reports; ValueError naming what is wrong when it reports none."""
    if not raw.strip():
        raise ValueError("the body is empty; post the delivery status notification as it was received")
    report = email.message_from_bytes(raw)
    if not report.get("From", "").strip():  # every report has one; without it, it is no message at all
        raise ValueError(
            "the body has no From header: post the delivery status notification as it was received, "
            "headers included"
        )
    try:
        temporary, permanent = all_failures(report)
    except Exception as e:  # a detector that trips over a malformed message: not a report we can read
        logger.warning("a bounce report could not be read: %s: %s", type(e).__name__, e)
        raise ValueError(
            f"the body could not be read as a bounce report (the reader failed with {type(e).__name__}); "
            "post the delivery status notification as it was received, headers included"
        ) from None
    failed, delayed = _addresses(permanent), _addresses(temporary)
    if not failed and not delayed:
        raise ValueError(
            "no failed recipient found: post a delivery status notification (RFC 3464, "
            "multipart/report with a message/delivery-status part) or a relay's bounce message"
        )
    diagnoses = _diagnoses(report)
    reasons = {a: diagnoses.get(a, "a delivery status notification reported it failed") for a in failed}
    return BounceReport(reasons, delayed)

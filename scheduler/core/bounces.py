"""Undeliverable addresses: what a permanent failure or a bounce report marks, and what it suppresses.

An address is marked when a server refused it for good (a 5xx reply to RCPT or DATA) or a
delivery status notification (RFC 3464) reports it failed; later messages to it are logged
``suppressed`` instead of being sent, until an operator removes the mark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from scheduler.core.model import iso_z, ms_of, utc_of

__all__ = ["BounceList", "BounceSource", "Undeliverable", "address_key", "suppressed_reason"]


class BounceSource(StrEnum):
    """What marked an address undeliverable."""

    SMTP = "smtp"
    """the SMTP server refused it with a 5xx reply while we sent"""
    REPORT = "report"
    """a delivery status notification posted to ``POST /v1/bounces``"""


def address_key(address: str) -> str:
    """The form an address is marked and looked up under: trimmed, case folded."""
    return address.strip().casefold()


@dataclass(frozen=True)
class Undeliverable:
    """One address mail no longer goes to, why, and since when."""

    address: str
    reason: str
    source: BounceSource
    since: datetime

    def to_json(self) -> str:
        return json.dumps(
            {"reason": self.reason, "source": str(self.source), "since_ms": ms_of(self.since)},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, address: str, raw: str | bytes) -> Undeliverable:
        data = json.loads(raw)
        since = utc_of(data["since_ms"])
        assert since is not None
        return cls(address, str(data["reason"]), BounceSource(data["source"]), since)

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "source": str(self.source),
            "since": iso_z(self.since),
        }


def suppressed_reason(mark: Undeliverable) -> str:
    """What the log says of a message not sent because its address is marked."""
    return (
        f"not sent: {mark.address} is undeliverable since {iso_z(mark.since)} ({mark.reason}); "
        f"'amends bounces remove {mark.address}' sends to it again"
    )


class BounceList(Protocol):
    """Where undeliverable addresses are kept (Redis, or in process for tests)."""

    def mark(self, address: str, reason: str, source: BounceSource, now: datetime) -> bool:
        """Mark ``address`` undeliverable; False when it already was (the first reason stays)."""
        ...

    def among(self, addresses: Iterable[str]) -> dict[str, Undeliverable]:
        """The marks of those of ``addresses`` that are marked, by :func:`address_key`."""
        ...

    def newest(self, limit: int | None = None) -> list[Undeliverable]:
        """The newest ``limit`` marks (all of them with None), newest first."""
        ...

    def count(self) -> int: ...

    def remove(self, address: str) -> bool:
        """Lift the mark of ``address``; False when it had none."""
        ...

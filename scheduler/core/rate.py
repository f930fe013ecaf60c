"""Send rates: ``14/s`` or ``1000/min``, and the token bucket every worker shares, as a pure function of ``now``.

The bucket is kept as one number, the theoretical arrival time (``tat_ms``) of the next send
(GCRA, the generic cell rate algorithm: a token bucket of one token, refilled every
``interval_ms``). A send may reserve its slot if that slot is at most ``horizon_ms`` ahead; it
then waits until the slot and goes. A send whose slot is further ahead reserves nothing and
comes back later, so that no worker holds a message for long. A throttling reply (SMTP 421
or 454, HTTP 429) pauses the bucket: no slot is handed out before the pause ends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["HORIZON_MS", "Rate", "Reservation", "parse_rate", "pause", "reserve"]

HORIZON_MS = 2_000
"""How far ahead a send may reserve its slot and wait for it in the worker."""

_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "m": 60, "minute": 60}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """At most ``count`` sends per ``per_s`` seconds, spread evenly."""

    count: int
    per_s: int

    @property
    def interval_ms(self) -> float:
        return self.per_s * 1000 / self.count

    @property
    def per_second(self) -> float:
        return self.count / self.per_s

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.per_s == 1 else 'min'}"


def parse_rate(text: str) -> Rate:
    """``14/s``, ``1000/min`` (also ``/sec``, ``/second``, ``/m``, ``/minute``); ValueError saying what is accepted."""
    found = _RATE.match(text.lower())
    if found is None or found.group(2) not in _UNITS or int(found.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a rate: write a whole number of sends per second or per minute, "
            "e.g. 14/s or 1000/min"
        )
    return Rate(int(found.group(1)), _UNITS[found.group(2)])


@dataclass(frozen=True)
class Reservation:
    """What the bucket answered: ``wait_ms`` until the reserved slot (``reserved``), or, not
    reserved, how long to wait before asking again."""

    reserved: bool
    wait_ms: int
    tat_ms: float
    """The bucket's state afterwards."""


def reserve(tat_ms: float, now_ms: int, interval_ms: float, horizon_ms: int = HORIZON_MS) -> Reservation:
    """One send asks the bucket ``tat_ms`` for a slot at ``now_ms``."""
    start = max(tat_ms, float(now_ms))
    wait_ms = start - now_ms
    if wait_ms <= horizon_ms:
        return Reservation(True, math.ceil(wait_ms), start + interval_ms)
    return Reservation(False, math.ceil(wait_ms - horizon_ms), tat_ms)


def pause(tat_ms: float, now_ms: int, pause_ms: int) -> float:
    """The bucket after a throttling reply: no slot before ``now_ms + pause_ms``."""
    return max(tat_ms, float(now_ms + pause_ms))

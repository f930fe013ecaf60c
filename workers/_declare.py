"""What every actor module shares: the placeholder broker actors are declared on at import
(:func:`workers.bind` moves them to the real one), the outage retry budget, and the hop
off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries

__all__ = ["OUTAGE_RETRIES", "in_thread", "placeholder"]

placeholder = StubBroker(middleware=[AsyncIO(), CurrentMessage(), Retries()])

OUTAGE_RETRIES = 2_000
"""How many times Dramatiq retries an event or timer message that met a storage outage
(backoff tops out at 5 min): an accepted event is not dropped because Redis was away for
an afternoon."""

_R = TypeVar("_R")


async def in_thread(function: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """Run a blocking store call off the event loop, so other sends on it go on meanwhile."""
    return await asyncio.to_thread(function, *args, **kwargs)

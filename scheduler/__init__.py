"""amends: keep every stakeholder of an incident informed, on the cadence they were promised.

``from scheduler import emit`` is all an emitting service needs; it loads the broker client
only when first used, so ``import scheduler`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.errors import AmendsError, ConfigError, EventError

if TYPE_CHECKING:
    from scheduler.core.events import Event, parse_event
    from scheduler.service.emitting import emit

__all__ = ["AmendsError", "ConfigError", "Event", "EventError", "emit", "parse_event"]

_LAZY = {
    "emit": "scheduler.service.emitting",
    "Event": "scheduler.core.events",
    "parse_event": "scheduler.core.events",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")

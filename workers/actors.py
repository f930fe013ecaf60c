"""The Dramatiq actors: thin, idempotent, each on a named queue.

Messages carry ids, never rendered mail. Actors are declared on a placeholder broker at
import (``workers/_declare.py``) and bound to the real one by :func:`bind`. One module per
concern: ``events.py`` (``handle_event``), ``timers.py`` (``fire_timers``, ``reconcile``),
``delivery.py`` (``deliver``, ``deliver_many``) with ``attempts.py`` (one send attempt),
``dispatch.py`` (how the engine hands communications to the deliver actors).
"""

from __future__ import annotations

import dramatiq

from workers.delivery import deliver, deliver_many
from workers.dispatch import DramatiqDispatch
from workers.events import handle_event
from workers.timers import fire_timers, reconcile

__all__ = [
    "ACTORS",
    "DramatiqDispatch",
    "bind",
    "deliver",
    "deliver_many",
    "fire_timers",
    "handle_event",
    "reconcile",
]

ACTORS = (handle_event, fire_timers, reconcile, deliver, deliver_many)


def bind(broker: dramatiq.Broker) -> None:
    """Declare every actor on ``broker`` (the one the worker consumes from)."""
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)

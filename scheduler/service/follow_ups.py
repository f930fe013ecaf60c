"""Sending an operator's follow-up to a reader's feedback, from the API or the command line.

The follow-up is composed here (so its communication id can be answered at once) and
handed to the ``deliver`` actor; the sweep of unfinished communications covers a crash
between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import dramatiq

from scheduler.core.closing import Closing
from scheduler.core.config import Config
from scheduler.core.ports import Store, TimerStore
from scheduler.service.queues import DELIVER_QUEUE, enqueue

__all__ = ["BrokerSends", "send_follow_up"]


class BrokerSends:
    """Hands each composed communication to the ``deliver`` actor through ``broker``."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def deliver(self, comm_id: str) -> None:
        enqueue(self.broker, DELIVER_QUEUE, "deliver", comm_id)


def send_follow_up(
    store: Store,
    timers: TimerStore,
    config: Callable[[], Config],
    broker: dramatiq.Broker,
    incident_id: str,
    stakeholder_id: str,
    text: str,
    now: datetime,
) -> str:
    """Compose the follow-up and hand it over; its communication id.
    :class:`~scheduler.core.closing.FollowUpError` names what is wrong."""
    closing = Closing(store, timers, config, BrokerSends(broker))
    return closing.follow_up(incident_id, stakeholder_id, text, now)

"""How the engine hands communications to the deliver actors."""

from __future__ import annotations

import threading

from workers.delivery import deliver, deliver_many

__all__ = ["DELIVER_GROUP", "DramatiqDispatch"]

DELIVER_GROUP = 25
"""Communications handed to one ``deliver_many`` message."""


class DramatiqDispatch:
    """Hands communications to the deliver actors, in groups of up to ``DELIVER_GROUP``.

    Held ids are per thread (each worker thread runs one entry point of the engine at a
    time), and handed over when a group is full or the engine flushes.
    """

    def __init__(self) -> None:
        self._held = threading.local()

    def _pending(self) -> list[str]:
        if not hasattr(self._held, "ids"):
            self._held.ids = []
        ids: list[str] = self._held.ids
        return ids

    def deliver(self, comm_id: str) -> None:
        pending = self._pending()
        pending.append(comm_id)
        if len(pending) >= DELIVER_GROUP:
            self.flush()

    def flush(self) -> None:
        pending = self._pending()
        if not pending:
            return
        group, pending[:] = list(pending), []
        if len(group) == 1:
            deliver.send(group[0])
        else:
            deliver_many.send(group)

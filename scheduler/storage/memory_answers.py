"""What stakeholders answer, kept in process: feedback and opt-outs for :class:`~scheduler.storage.memory_store.MemoryStore`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.core.feedback import (
    Feedback,
    OptOut,
    check_rating,
    clean_comment,
    opt_out_id,
    parse_opt_out_id,
)

__all__ = ["MemoryAnswers"]


class MemoryAnswers:
    """Feedback and opt-outs in dictionaries (part of the in-memory store)."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._feedback: dict[tuple[str, str], Feedback] = {}
        self._opt_outs: dict[str, datetime] = {}

    def record_rating(self, incident_id: str, stakeholder_id: str, rating: int, now: datetime) -> Feedback:
        changes = {"rating": check_rating(rating), "rated_at": now}
        return self._change_feedback(incident_id, stakeholder_id, changes)

    def record_comment(self, incident_id: str, stakeholder_id: str, comment: str, now: datetime) -> Feedback:
        changes = {"comment": clean_comment(comment), "commented_at": now}
        return self._change_feedback(incident_id, stakeholder_id, changes)

    def _change_feedback(self, incident_id: str, stakeholder_id: str, changes: dict[str, Any]) -> Feedback:
        with self._lock:
            merged = replace(self._feedback.get((incident_id, stakeholder_id), Feedback()), **changes)
            self._feedback[incident_id, stakeholder_id] = merged
            return merged

    def feedback_for(self, incident_id: str) -> dict[str, Feedback]:
        with self._lock:
            return {s: f for (i, s), f in sorted(self._feedback.items()) if i == incident_id}

    def record_opt_out(self, stakeholder_id: str, now: datetime, incident_id: str | None = None) -> datetime:
        with self._lock:
            return self._opt_outs.setdefault(opt_out_id(stakeholder_id, incident_id), now)

    def is_opted_out(self, stakeholder_id: str, incident_id: str | None = None) -> bool:
        with self._lock:
            return opt_out_id(stakeholder_id) in self._opt_outs or (
                incident_id is not None and opt_out_id(stakeholder_id, incident_id) in self._opt_outs
            )

    def opted_out_among(self, incident_id: str, stakeholder_ids: Sequence[str]) -> set[str]:
        return {s for s in stakeholder_ids if self.is_opted_out(s, incident_id)}

    def opt_outs(self) -> list[OptOut]:
        with self._lock:
            return [OptOut(*parse_opt_out_id(i), since) for i, since in sorted(self._opt_outs.items())]

    def remove_opt_out(self, opt_out_id: str) -> bool:
        with self._lock:
            return self._opt_outs.pop(opt_out_id, None) is not None

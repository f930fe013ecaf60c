"""``/metrics``: the communications log's figures in Prometheus' text format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from scheduler.core.model import Communication, Kind, Status
from scheduler.core.promises import open_promises, promise_report
from scheduler.core.text import scrub
from scheduler.storage import keys
from scheduler.storage.keys import REJECTED_KEEP
from scheduler.web.auth import require_reader
from scheduler.web.deps import WebDep

__all__ = ["LATENESS_BUCKETS_S", "metrics_text", "router"]

LATENESS_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds of the lateness histogram's buckets; ``+Inf`` follows."""

router = APIRouter()


@router.get("/metrics", dependencies=[Depends(require_reader)])
def metrics(web: WebDep) -> PlainTextResponse:
    """Prometheus text format: communications by kind and status, lateness, timers, rejects."""
    comms: list[Communication] = list(web.store.communications())
    overdue = promise_report([], web.clock(), open_promises(web.store), web.grace_s()).overdue_unsent
    rejected = int(web.client.llen(keys.REJECTED))
    text = metrics_text(comms, web.timers.armed_count(), rejected, overdue)
    return PlainTextResponse(scrub(text), media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(
    comms: Iterable[Communication], armed_timers: int, rejected_events: int, overdue_promises: int = 0
) -> str:
    """The figures for ``/metrics`` in Prometheus' text format (version 0.0.4).

    Communications by kind and status are a gauge (a message moves between statuses);
    created per kind is a counter. Lateness is over sent messages, sending early
    counting as 0, as in ``amends log --promises``.
    """
    comms = list(comms)
    by_status = Counter((str(c.kind), str(c.status)) for c in comms)
    created = Counter(str(c.kind) for c in comms)
    lateness = [max(0.0, c.lateness_s) for c in comms if c.lateness_s is not None]
    lines = [
        "# HELP amends_communications Communications in the log, by kind and current status.",
        "# TYPE amends_communications gauge",
    ]
    kinds = list(dict.fromkeys([*map(str, Kind), *created]))
    statuses = list(dict.fromkeys([*map(str, Status), *(s for _, s in by_status)]))
    for kind in kinds:
        for status in statuses:
            labels = f'kind="{_label(kind)}",status="{_label(status)}"'
            lines.append(f"amends_communications{{{labels}}} {by_status[(kind, status)]}")
    lines += [
        "# HELP amends_communications_created_total Communications created, by kind.",
        "# TYPE amends_communications_created_total counter",
        *(f'amends_communications_created_total{{kind="{_label(k)}"}} {created[k]}' for k in kinds),
        "# HELP amends_lateness_seconds How long after its promised time each sent message went out.",
        "# TYPE amends_lateness_seconds histogram",
        *(
            f'amends_lateness_seconds_bucket{{le="{bound}"}} {sum(1 for s in lateness if s <= bound)}'
            for bound in LATENESS_BUCKETS_S
        ),
        f'amends_lateness_seconds_bucket{{le="+Inf"}} {len(lateness)}',
        f"amends_lateness_seconds_sum {sum(lateness)!r}",
        f"amends_lateness_seconds_count {len(lateness)}",
        "# HELP amends_promises_overdue Promised messages not yet composed, past their time and the grace.",
        "# TYPE amends_promises_overdue gauge",
        f"amends_promises_overdue {overdue_promises}",
        "# HELP amends_timers_armed Timers armed: next updates and feedback requests not yet due.",
        "# TYPE amends_timers_armed gauge",
        f"amends_timers_armed {armed_timers}",
        f"# HELP amends_rejected_events Rejected events kept for review, the newest {REJECTED_KEEP} at most.",
        "# TYPE amends_rejected_events gauge",
        f"amends_rejected_events {rejected_events}",
    ]
    return "\n".join(lines) + "\n"

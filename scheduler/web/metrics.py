"""``/metrics``: the communications log's figures in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from scheduler.core.model import Kind, Status, ms_of
from scheduler.core.ports import Counters
from scheduler.core.review_promise import review_counts
from scheduler.core.text import scrub
from scheduler.service.waiting import waiting_metrics
from scheduler.storage import keys
from scheduler.storage.keys import REJECTED_KEEP
from scheduler.storage.ratings import RatingsLog
from scheduler.web.auth import require_reader
from scheduler.web.bounces import bounce_metrics
from scheduler.web.closing_metrics import ratings_text, reviews_text
from scheduler.web.deps import WebDep

__all__ = ["metrics_text", "router"]

router = APIRouter()


@router.get("/metrics", dependencies=[Depends(require_reader)])
def metrics(web: WebDep) -> PlainTextResponse:
    """Prometheus text format: communications by kind and status, lateness, timers, rejects.

    Every figure but one is kept as things happen (counters, index sizes), so a scrape costs
    the same with ten communications stored or ten million; the review promises by outcome
    are worked out from the incidents' records (one read per incident retention keeps)."""
    overdue_before = ms_of(web.clock()) - int(web.grace_s() * 1000)
    rejected = int(web.client.llen(keys.REJECTED))
    text = (
        metrics_text(
            web.store.counters(), web.timers.armed_count(), rejected, web.timers.overdue_count(overdue_before)
        )
        + waiting_metrics(web.client)
        + bounce_metrics(web)
    )
    text += ratings_text(RatingsLog(web.client).counts())
    config = web.config()
    timezone = config.defaults.timezone if config else "UTC"
    incidents = web.store.incidents(web.store.incident_ids())
    text += reviews_text(review_counts(incidents, web.clock(), timezone, web.grace_s()))
    return PlainTextResponse(scrub(text), media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(
    counters: Counters, armed_timers: int, rejected_events: int, overdue_promises: int = 0
) -> str:
    """The figures for ``/metrics`` in Prometheus' text format (version 0.0.4).

    Communications by kind and status are a gauge (a message moves between statuses);
    created per kind is a counter. Lateness is over sent messages, sending early
    counting as 0, as in ``amends log --promises``.
    """
    kinds = list(dict.fromkeys([*map(str, Kind), *counters.created, *(k for k, _ in counters.current)]))
    statuses = list(dict.fromkeys([*map(str, Status), *(s for _, s in counters.current)]))
    lines = [
        "# HELP amends_communications Communications in the log, by kind and current status.",
        "# TYPE amends_communications gauge",
    ]
    for kind in kinds:
        for status in statuses:
            labels = f'kind="{_label(kind)}",status="{_label(status)}"'
            lines.append(f"amends_communications{{{labels}}} {counters.current.get((kind, status), 0)}")
    lines += [
        "# HELP amends_communications_created_total Communications created, by kind.",
        "# TYPE amends_communications_created_total counter",
        *(
            f'amends_communications_created_total{{kind="{_label(k)}"}} {counters.created.get(k, 0)}'
            for k in kinds
        ),
        "# HELP amends_lateness_seconds How long after its promised time each sent message went out.",
        "# TYPE amends_lateness_seconds histogram",
        *(
            f'amends_lateness_seconds_bucket{{le="{bound_ms / 1000}"}} {counters.late_le_ms.get(bound_ms, 0)}'
            for bound_ms in keys.LATENESS_BUCKETS_MS
        ),
        f'amends_lateness_seconds_bucket{{le="+Inf"}} {counters.late_count}',
        f"amends_lateness_seconds_sum {counters.late_sum_ms / 1000!r}",
        f"amends_lateness_seconds_count {counters.late_count}",
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

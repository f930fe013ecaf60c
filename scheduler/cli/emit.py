"""``amends emit``: an event from a file, stdin or flags, validated and enqueued for the workers."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from scheduler.cli._common import EXIT_OK, EXIT_USAGE, refuse
from scheduler.cli.event_input import Refused, load_events, validated
from scheduler.core.events import Event
from scheduler.core.model import iso_z
from scheduler.errors import AmendsError
from scheduler.service.settings import Settings

__all__ = ["cmd_emit"]

_FLAGS = {
    "incident_id": "--incident",
    "event_id": "--event-id",
    "occurred_at": "--occurred-at",
    "source": "--source",
    "incident.services": "--service",
    "incident.review_by": "--review-by",
    "incident.review_url": "--review-url",
}


def _flag_of(place: str) -> str:
    """The command-line flag that sets an event field (``incident.title`` -> ``--title``)."""
    if place in _FLAGS or place.startswith("incident.services["):
        return _FLAGS.get(place, "--service")
    return "--" + place.removeprefix("incident.") if place.startswith("incident.") else ""


def _event_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    incident: dict[str, Any] = {}
    names = ("title", "severity", "status", "summary", "impact", "plan", "owner", "workaround", "prevention")
    for name in (*names, "review_by", "review_url"):
        value = getattr(args, name, None)
        if value is not None:
            incident[name] = value
    if args.service:
        incident["services"] = args.service
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": args.event_id or str(uuid.uuid4()),
        "type": f"incident.{args.type}",
        "occurred_at": args.occurred_at or iso_z(datetime.now(UTC)),
        "source": args.source,
        "incident": incident,
    }
    if args.incident is not None:
        event["incident_id"] = args.incident
    return event


def _keep_refused(refused: Refused) -> None:
    """Keep each refused event where ``amends log --rejected`` shows it, as the API does."""
    import redis

    from scheduler.storage.connection import client_for
    from scheduler.storage.redis_store import RedisStore

    try:
        store = RedisStore(client_for(Settings.from_env().resolved_redis_url()))
        for document, errors in refused:
            store.reject(document, errors, datetime.now(UTC), "cli")
    except (AmendsError, redis.RedisError, OSError) as e:
        print(f"amends emit: the refused event is not kept in 'amends log --rejected': {e}", file=sys.stderr)


def _enqueue(events: list[Event]) -> None:
    """Enqueue each event not accepted before, saying which were enqueued, which wait for
    their incident's opened and which were duplicates."""

    from scheduler.service.emitting import already_accepted, emit
    from scheduler.service.waiting import door_status
    from scheduler.storage.connection import client_for

    settings = Settings.from_env()
    if settings.redis_url is None and settings.broker_url is None:
        print(
            f"amends emit: AMENDS_REDIS_URL is not set; enqueueing on the embedded Redis under "
            f"{settings.data_dir / 'redis'}, which only a worker started here without AMENDS_REDIS_URL reads",
            file=sys.stderr,
        )
    client = client_for(settings.resolved_redis_url())
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen or already_accepted(client, event.event_id, event.incident_id):
            print(f"duplicate {event.event_id}: an event with this id was already accepted; nothing enqueued")
            continue
        waits = door_status(client, events, event, settings.order_wait_ms)
        emit(event.model_dump(mode="json", by_alias=True, exclude_none=True))
        seen.add(event.event_id)
        if waits:
            print(f"waiting {event.event_id} ({event.type} {event.incident_id}): {waits}")
        else:
            print(f"enqueued {event.event_id} ({event.type} {event.incident_id})")


def cmd_emit(args: argparse.Namespace) -> int:
    from_flags = args.type is not None and args.type != "-"
    if from_flags and args.file:
        return refuse("emit", f"give either '{args.type}' with flags or --file, not both")
    refused: Refused = []
    if from_flags:
        events = validated(
            "emit", [_event_from_flags(args)], datetime.now(UTC), flag_of=_flag_of, refused=refused
        )
    elif args.file or args.type == "-":
        events = load_events("emit", args.file or "-", datetime.now(UTC), refused=refused)
    else:
        return refuse("emit", "give --file FILE, - for stdin, or a type such as 'opened'")
    if events is None:
        if refused:
            _keep_refused(refused)
        return EXIT_USAGE
    _enqueue(events)
    return EXIT_OK

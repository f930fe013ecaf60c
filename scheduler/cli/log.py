"""``amends log``: the communications table, one message in full, the promises kept, rejected events."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, config_or_none, load_settings, redis_store, refuse
from scheduler.core._validation import bounded_duration_s
from scheduler.core.model import Status
from scheduler.core.ports import format_cursor, parse_cursor
from scheduler.core.text import scrub
from scheduler.service.settings import Settings

if TYPE_CHECKING:
    from scheduler.core.model import Communication
    from scheduler.core.ports import Cursor
    from scheduler.storage.redis_store import RedisStore

__all__ = ["cmd_log"]


DEFAULT_LIMIT = 100
"""Rows of one page of the table when ``--limit`` is not given."""

PROMISES_WINDOW = "7d"
"""What ``--promises`` covers without ``--since``."""


def cmd_log(args: argparse.Namespace) -> int:
    """Dispatch to one of the modes: ``show COMM_ID``, ``--rejected``, ``--promises``, or the table."""
    from scheduler.core.promises import LogFilter

    settings = load_settings()
    store = redis_store(settings)
    if args.target:
        return _show(args, settings, store)
    try:
        since = _since(args.since or (PROMISES_WINDOW if args.promises else None))
    except (ValueError, OverflowError) as e:
        return refuse("log", f"--since: {e}")
    if args.rejected:
        return _rejected(args, store, since)
    if args.waiting:
        return _waiting(args, store)
    keep = LogFilter(args.incident, args.stakeholder, args.kind, args.status)
    if args.promises:
        return _promises(args, settings, store, [c for c in store.communications(since) if keep.keeps(c)])
    try:
        after = parse_cursor(args.cursor) if args.cursor else None
    except ValueError as e:
        return refuse("log", f"--cursor: {e}")
    return _table(args, store, *store.page(keep.keeps, args.limit or DEFAULT_LIMIT, after, since))


def _since(duration: str | None) -> datetime | None:
    """The moment ``--since`` DURATION ago, or None without it; ValueError when it is no duration."""
    if not duration:
        return None
    return datetime.now(UTC) - timedelta(seconds=bounded_duration_s(duration))


def _show(args: argparse.Namespace, settings: Settings, store: RedisStore) -> int:
    """``amends log show COMM_ID``: one message in full, as the SMTP server received it."""
    if args.target[0] != "show" or len(args.target) != 2:
        return refuse("log", "use 'amends log show COMM_ID'")
    filters = [args.incident, args.stakeholder, args.kind, args.status, args.since, args.limit, args.cursor]
    if any(f is not None for f in filters) or args.rejected or args.promises or args.waiting:
        return refuse("log show", "takes a communication id and --json only")
    comm = store.comm(args.target[1])
    if comm is None:
        return refuse("log", f"no communication {args.target[1]!r}", EXIT_FAILED)
    if args.json:
        print(scrub(json.dumps({**comm.as_json(), "message": comm.message}, ensure_ascii=False)))
    elif comm.message:
        # exactly what the SMTP server received: CRLF line ends, nothing added
        sys.stdout.write(scrub(comm.message))
        sys.stdout.flush()
    else:
        from scheduler.mail.composed import composed_text

        sys.stdout.write(scrub(composed_text(comm, config_or_none(settings), settings.templates_dir, "")))
        sys.stdout.flush()
    return EXIT_OK


def _rejected(args: argparse.Namespace, store: RedisStore, since: datetime | None) -> int:
    """``amends log --rejected``: the events refused, and why."""
    from scheduler.cli.logview import REJECTED_COLUMNS, format_table, rejected_records, rejected_row

    if args.stakeholder or args.kind or args.status or args.promises:
        return refuse("log", "--rejected takes only --incident, --since, --limit and --json")
    records = rejected_records(store.rejected(args.limit or 100), args.incident, since)
    if args.json:
        for record in records:
            print(scrub(json.dumps(record, ensure_ascii=False, default=str)))
    elif records:
        print(scrub(format_table((rejected_row(r) for r in records), REJECTED_COLUMNS)))
    else:
        print("no rejected events")
    return EXIT_OK


def _waiting(args: argparse.Namespace, store: RedisStore) -> int:
    """``amends log --waiting``: the events held for their incident's opened, and until when."""
    from scheduler.cli.logview import WAITING_COLUMNS, format_table, waiting_row
    from scheduler.service.waiting import waiting_events

    if args.stakeholder or args.kind or args.status or args.promises or args.since:
        return refuse("log", "--waiting takes only --incident and --json")
    waiting = waiting_events(store.client, args.incident)
    if args.json:
        for record in waiting:
            print(scrub(json.dumps(record.as_json(), ensure_ascii=False)))
    elif waiting:
        print(scrub(format_table((waiting_row(w) for w in waiting), WAITING_COLUMNS)))
    else:
        print("no events are waiting")
    return EXIT_OK


def _promises(
    args: argparse.Namespace, settings: Settings, store: RedisStore, comms: list[Communication]
) -> int:
    """``amends log --promises``: how many promised times were kept, and how late the rest were."""
    from scheduler.core.promises import ON_TIME_GRACE_S, open_promises, promise_report
    from scheduler.core.review_promise import review_counts, review_line

    # the incidents with a message in the window: a thread that promised more has one
    among = sorted({c.incident_id for c in comms})
    pending = open_promises(store, args.incident, args.stakeholder, among=among)
    if args.kind:
        pending = [p for p in pending if p.kind == args.kind]
    if args.status not in (None, Status.SCHEDULED):
        pending = []  # promises not yet composed have no other status
    config = config_or_none(settings)
    grace_s = float(config.kept_within) if config else ON_TIME_GRACE_S
    now = datetime.now(UTC)
    report = promise_report(comms, now, pending, grace_s)
    reviews = review_counts(
        store.incidents(among), now, config.defaults.timezone if config else "UTC", grace_s
    )
    if args.json:
        print(json.dumps({**report.as_json(), "reviews": {str(k): v for k, v in reviews.items()}}))
    else:
        print(f"the last {args.since or PROMISES_WINDOW} (--since changes it):")
        print("\n".join([*report.lines(), review_line(reviews)]))
        _removed_note(store)
    return EXIT_OK


def _table(
    args: argparse.Namespace, store: RedisStore, comms: list[Communication], following: Cursor | None
) -> int:
    """``amends log``: one page of the communications that pass the filters, newest first,
    as a table or JSON lines; the command for the next page goes to stderr."""
    from scheduler.cli.logview import fit_table, format_table, narrow_header, narrow_row, row_json, table_row

    if args.json:
        for comm in comms:
            print(scrub(row_json(comm)))
    elif comms and args.wide:
        print(scrub(format_table(table_row(c) for c in comms)))
    elif comms:
        now = datetime.now(UTC).astimezone()
        print(scrub(fit_table((narrow_row(c, now) for c in comms), narrow_header(now), _terminal_width())))
    else:
        print("no communications match")
        _waiting_note(store, args.incident)
    if following is not None:
        print(f"older: amends log {_again(args)}--cursor {format_cursor(following)}", file=sys.stderr)
    if not args.json:
        _removed_note(store)
    return EXIT_OK


def _waiting_note(store: RedisStore, incident: str | None) -> None:
    """Say when events (of ``incident``) wait for their opened: why nothing was sent yet."""
    from scheduler.service.waiting import waiting_events

    waiting = waiting_events(store.client, incident)
    if waiting:
        about = f" of {incident}" if incident else ""
        print(f"{len(waiting)} event(s){about} wait for their incident's opened: amends log --waiting")


def _terminal_width() -> int:
    """``COLUMNS`` when set, else the terminal's width, else (output to a file or a pipe) 100."""
    from scheduler.cli.logview import NARROW_WIDTH

    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((NARROW_WIDTH, 24)).columns
    return NARROW_WIDTH


def _again(args: argparse.Namespace) -> str:
    """The filters of this call, to repeat them for the next page."""
    given = [
        f"--{name} {value} "
        for name in ("incident", "stakeholder", "kind", "status", "since", "limit")
        if (value := getattr(args, name)) is not None
    ]
    return "".join(given) + ("--json " if args.json else "") + ("--wide " if args.wide else "")


def _removed_note(store: RedisStore) -> None:
    """Say what retention removed, so a shorter log is not a surprise."""
    removed = store.removed()
    if removed.incidents and removed.last_ms is not None:
        when = datetime.fromtimestamp(removed.last_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"retention removed {removed.incidents} resolved incidents with {removed.communications} "
            f"communications so far (last on {when}; 'retention' in the configuration)"
        )

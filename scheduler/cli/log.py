"""``amends log``: the communications table, one message in full, the promises kept, rejected events."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, config_or_none, load_settings, redis_store, refuse
from scheduler.core._validation import bounded_duration_s
from scheduler.core.model import Status
from scheduler.core.text import scrub
from scheduler.service.settings import Settings

if TYPE_CHECKING:
    from scheduler.core.model import Communication
    from scheduler.storage.redis_store import RedisStore

__all__ = ["cmd_log"]


def cmd_log(args: argparse.Namespace) -> int:
    """Dispatch to one of the modes: ``show COMM_ID``, ``--rejected``, ``--promises``, or the table."""
    from scheduler.cli.logview import LogFilter

    settings = load_settings()
    store = redis_store(settings)
    if args.target:
        return _show(args, settings, store)
    try:
        since = _since(args.since)
    except (ValueError, OverflowError) as e:
        return refuse("log", f"--since: {e}")
    if args.rejected:
        return _rejected(args, store, since)
    keep = LogFilter(args.incident, args.stakeholder, args.kind, args.status)
    comms = [c for c in store.communications(since) if keep.keeps(c)]
    if args.promises:
        return _promises(args, settings, store, comms)
    return _table(args, comms)


def _since(duration: str | None) -> datetime | None:
    """The moment ``--since`` DURATION ago, or None without it; ValueError when it is no duration."""
    if not duration:
        return None
    return datetime.now(UTC) - timedelta(seconds=bounded_duration_s(duration))


def _show(args: argparse.Namespace, settings: Settings, store: RedisStore) -> int:
    """``amends log show COMM_ID``: one message in full, as the SMTP server received it."""
    if args.target[0] != "show" or len(args.target) != 2:
        return refuse("log", "use 'amends log show COMM_ID'")
    filters = [args.incident, args.stakeholder, args.kind, args.status, args.since, args.limit]
    if any(f is not None for f in filters) or args.rejected or args.promises:
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


def _promises(
    args: argparse.Namespace, settings: Settings, store: RedisStore, comms: list[Communication]
) -> int:
    """``amends log --promises``: how many promised times were kept, and how late the rest were."""
    from scheduler.core.promises import ON_TIME_GRACE_S, open_promises, promise_report

    pending = open_promises(store, args.incident, args.stakeholder)
    if args.kind:
        pending = [p for p in pending if p.kind == args.kind]
    if args.status not in (None, Status.SCHEDULED):
        pending = []  # promises not yet composed have no other status
    config = config_or_none(settings)
    grace_s = float(config.kept_within) if config else ON_TIME_GRACE_S
    report = promise_report(comms, datetime.now(UTC), pending, grace_s)
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print("\n".join(report.lines()))
    return EXIT_OK


def _table(args: argparse.Namespace, comms: list[Communication]) -> int:
    """``amends log``: the communications that pass the filters, oldest first, as a table or JSON lines."""
    from scheduler.cli.logview import format_table, row_json, table_row

    if args.limit is not None:
        comms = comms[-args.limit :]  # the newest
    if args.json:
        for comm in comms:
            print(scrub(row_json(comm)))
    elif comms:
        print(scrub(format_table(table_row(c) for c in comms)))
    else:
        print("no communications match")
    return EXIT_OK

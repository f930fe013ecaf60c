"""``amends bounces``: the addresses marked undeliverable, and lifting a mark."""

from __future__ import annotations

import argparse
import json

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, load_settings, refuse
from scheduler.core.text import scrub

__all__ = ["cmd_bounces"]


def cmd_bounces(args: argparse.Namespace) -> int:
    from scheduler.cli.logview import format_table
    from scheduler.storage.bounces import RedisBounceList
    from scheduler.storage.connection import client_for

    bounces = RedisBounceList(client_for(load_settings().resolved_redis_url()))
    if args.action:
        if args.action[0] != "remove" or len(args.action) != 2:
            return refuse("bounces", "use 'amends bounces' or 'amends bounces remove ADDRESS'")
        address = args.action[1]
        if not bounces.remove(address):
            return refuse(
                "bounces",
                f"{address!r} is not marked undeliverable; 'amends bounces' lists them",
                EXIT_FAILED,
            )
        print(f"removed {address}: mail is sent to it again")
        return EXIT_OK
    marks = [m.as_json() for m in bounces.newest()]
    if args.json:
        for mark in marks:
            print(scrub(json.dumps(mark, ensure_ascii=False)))
    elif marks:
        rows = ((m["address"], m["since"], m["source"], m["reason"]) for m in marks)
        print(scrub(format_table(rows, ("address", "since", "marked by", "why"))))
    else:
        print("no undeliverable addresses")
    return EXIT_OK

"""``amends opt-outs``: the opt-outs stakeholders made through unsubscribe links, and undoing one."""

from __future__ import annotations

import argparse
import json

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, load_settings, redis_store, refuse
from scheduler.core.text import scrub

__all__ = ["cmd_opt_outs"]


def cmd_opt_outs(args: argparse.Namespace) -> int:
    from scheduler.cli.logview import format_table

    store = redis_store(load_settings())
    if args.action:
        if args.action[0] != "remove" or len(args.action) != 2:
            return refuse("opt-outs", "use 'amends opt-outs' or 'amends opt-outs remove ID'")
        opt_out = args.action[1]
        if not store.remove_opt_out(opt_out):
            return refuse("opt-outs", f"no opt-out {opt_out!r}; 'amends opt-outs' lists them", EXIT_FAILED)
        print(f"removed {opt_out}: that mail will be sent again")
        return EXIT_OK
    found = store.opt_outs()
    if args.json:
        for opt in found:
            print(scrub(json.dumps(opt.as_json(), ensure_ascii=False)))
    elif found:
        rows = (
            (o.id, o.stakeholder_id, o.incident_id or "all incident mail", o.as_json()["since"])
            for o in found
        )
        print(scrub(format_table(rows, ("id", "stakeholder", "stops", "since"))))
    else:
        print("no opt-outs")
    return EXIT_OK

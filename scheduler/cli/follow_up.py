"""``amends follow-up INCIDENT STAKEHOLDER TEXT``: tell a reader what was done about their feedback."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, config_or_none, load_settings, redis_store, refuse
from scheduler.core.closing import FollowUpError

__all__ = ["cmd_follow_up"]


def cmd_follow_up(args: argparse.Namespace) -> int:
    from scheduler.service.follow_ups import send_follow_up
    from scheduler.service.processes import broker_for
    from scheduler.storage.timers import RedisTimerStore

    settings = load_settings()
    config = config_or_none(settings)
    if config is None:
        return refuse("follow-up", f"cannot read the configuration {settings.config_path}", EXIT_FAILED)
    store = redis_store(settings)
    broker = broker_for(settings)
    try:
        comm_id = send_follow_up(
            store,
            RedisTimerStore(store.client),
            lambda: config,
            broker,
            args.incident,
            args.stakeholder,
            args.text,
            datetime.now(UTC),
        )
    except FollowUpError as e:
        return refuse("follow-up", str(e), EXIT_FAILED)
    finally:
        broker.close()
    print(f"{comm_id}: the follow-up is on its way to {args.stakeholder}")
    return EXIT_OK

"""The scheduler loop's logic on the in-memory timer store: tick(now), grouping, sleeping."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.core.model import ms_of
from scheduler.errors import TimerStoreError
from scheduler.service.loop import SchedulerLoop
from scheduler.storage.timers import MemoryTimerStore

NOW = datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)  # a second before Berlin springs forward


def _loop(per_message: int = 25, batch: int = 500) -> tuple[SchedulerLoop, list[list[tuple[str, int]]]]:
    sent: list[list[tuple[str, int]]] = []
    return SchedulerLoop(MemoryTimerStore(), sent.append, batch=batch, per_message=per_message), sent


def test_tick_enqueues_only_what_is_due() -> None:
    """tick(now) sends the timers due at or before now, with their due times, and leaves later ones armed."""
    loop, sent = _loop()
    loop.timers.arm("u|INC-1|a", ms_of(NOW))
    loop.timers.arm("u|INC-1|b", ms_of(NOW + timedelta(milliseconds=1)))
    assert loop.tick(NOW) == 1
    assert sent == [[("u|INC-1|a", ms_of(NOW))]]
    assert loop.timers.due_ms("u|INC-1|b") == ms_of(NOW) + 1


def test_a_burst_is_grouped_into_few_messages() -> None:
    """1,000 timers due at once go out as 40 messages of 25, all claimed in batches."""
    loop, sent = _loop(per_message=25, batch=300)
    loop.timers.arm_many((f"u|INC-{n}|a", ms_of(NOW)) for n in range(1000))
    assert loop.tick(NOW) == 1000
    assert len(sent) == 12 + 12 + 12 + 4  # claims of 300, 300, 300 and 100, in messages of 25
    assert sorted(m for group in sent for m, _ in group) == sorted(f"u|INC-{n}|a" for n in range(1000))
    assert loop.tick(NOW) == 0


def test_sleep_until_the_next_timer_but_never_past_the_maximum() -> None:
    """The loop sleeps exactly until the next due timer, capped by max_sleep_s, and not at all when one is due."""
    loop, _ = _loop()
    loop.max_sleep_s = 5.0
    assert loop.sleep_s(NOW) == 5.0
    loop.timers.arm("u|INC-1|a", ms_of(NOW + timedelta(milliseconds=1500)))
    assert loop.sleep_s(NOW) == 1.5
    assert loop.sleep_s(NOW + timedelta(seconds=2)) == 0.0
    loop.timers.arm("u|INC-1|a", ms_of(NOW + timedelta(hours=1)))
    assert loop.sleep_s(NOW) == 5.0


def test_a_send_that_fails_puts_its_timers_back_at_once() -> None:
    """If enqueueing raises, the claimed timers are put back: the next tick, at the same moment, hands them out."""
    store = MemoryTimerStore()

    def broken(timers: list[tuple[str, int]]) -> None:
        raise ConnectionError("broker down")

    loop = SchedulerLoop(store, broken, lease_ms=30_000, per_message=1)
    store.arm("u|INC-1|a", ms_of(NOW))
    store.arm("u|INC-2|a", ms_of(NOW))
    with pytest.raises(ConnectionError):
        loop.tick(NOW)
    sent: list[list[tuple[str, int]]] = []
    retry = SchedulerLoop(store, sent.append, lease_ms=30_000)
    assert retry.tick(NOW) == 2
    assert sent == [[("u|INC-1|a", ms_of(NOW)), ("u|INC-2|a", ms_of(NOW))]]


class _NoPutBack(MemoryTimerStore):
    def release_claims(self, claims: Iterable[tuple[str, int]], now_ms: int) -> int:
        raise TimerStoreError("could not put timers back: Redis is away")


def test_a_send_that_fails_while_nothing_can_be_put_back_leaves_the_timers_to_their_lease() -> None:
    """If enqueueing raises and the store cannot take them back either, the timers come back after their lease."""
    store = _NoPutBack()

    def broken(timers: list[tuple[str, int]]) -> None:
        raise ConnectionError("broker down")

    loop = SchedulerLoop(store, broken, lease_ms=30_000)
    store.arm("u|INC-1|a", ms_of(NOW))
    with pytest.raises(ConnectionError):
        loop.tick(NOW)
    sent: list[list[tuple[str, int]]] = []
    retry = SchedulerLoop(store, sent.append, lease_ms=30_000)
    assert retry.tick(NOW + timedelta(seconds=29)) == 0
    assert retry.tick(NOW + timedelta(seconds=31)) == 1
    assert sent == [[("u|INC-1|a", ms_of(NOW))]]

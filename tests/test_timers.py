"""Contract of the timer store, run against the in-memory store and a real Redis alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.core.ports import TimerStore
from scheduler.errors import TimerStoreError
from scheduler.storage import keys
from scheduler.storage.timers import MemoryTimerStore, RedisTimerStore

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms
SECOND = 1_000
HOUR = 3_600 * SECOND
LEASE = 30 * SECOND


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.real),
        pytest.param("cluster", marks=pytest.mark.real),
    ]
)
def store(request: pytest.FixtureRequest) -> TimerStore:
    if request.param == "memory":
        return MemoryTimerStore()
    return RedisTimerStore(request.getfixturevalue(f"{request.param}_client"))


@pytest.fixture
def redis_store(redis_client: redis.Redis) -> RedisTimerStore:
    return RedisTimerStore(redis_client)


def test_claim_hands_out_due_timers_earliest_first_up_to_limit(store: TimerStore) -> None:
    """claim returns due timers earliest due first, at most ``limit`` of them, the rest stay armed."""
    store.arm("c", NOW - 1 * SECOND)
    store.arm("a", NOW - 3 * SECOND)
    store.arm("b", NOW - 2 * SECOND)

    assert store.claim(NOW, LEASE, limit=2) == [("a", NOW - 3 * SECOND), ("b", NOW - 2 * SECOND)]
    assert store.claim(NOW, LEASE, limit=2) == [("c", NOW - 1 * SECOND)]


def test_overdue_counts_armed_timers_due_before_a_moment(store: TimerStore) -> None:
    store.arm("a", NOW - HOUR)
    store.arm("b", NOW - SECOND)
    store.arm("c", NOW + SECOND)
    assert store.overdue_count(NOW - SECOND) == 1
    assert store.overdue_count(NOW) == 2
    store.claim(NOW, LEASE, limit=1)
    assert store.overdue_count(NOW) == 1


def test_timer_due_exactly_now_is_claimed(store: TimerStore) -> None:
    """A timer whose due time equals now is due."""
    store.arm("a", NOW)

    assert store.claim(NOW, LEASE, limit=10) == [("a", NOW)]


def test_timer_not_yet_due_stays_armed(store: TimerStore) -> None:
    """A timer due after now is not handed out and stays armed at its due time."""
    store.arm("later", NOW + 1)

    assert store.claim(NOW, LEASE, limit=10) == []
    assert store.due_ms("later") == NOW + 1
    assert store.armed_count() == 1


def test_rearm_moves_the_due_time(store: TimerStore) -> None:
    """Arming an armed timer again replaces its due time instead of adding a second timer."""
    store.arm("a", NOW - SECOND)
    store.arm("a", NOW + HOUR)

    assert store.claim(NOW, LEASE, limit=10) == []
    assert store.due_ms("a") == NOW + HOUR
    assert store.armed_count() == 1
    assert store.claim(NOW + HOUR, LEASE, limit=10) == [("a", NOW + HOUR)]


def test_cancel_disarms_and_says_whether_it_was_armed(store: TimerStore) -> None:
    """cancel removes an armed timer and returns True; cancelling an unknown timer returns False."""
    store.arm("a", NOW - SECOND)

    assert store.cancel("a") is True
    assert store.cancel("a") is False
    assert store.due_ms("a") is None
    assert store.claim(NOW, LEASE, limit=10) == []


def test_claimed_timer_is_not_handed_out_twice(store: TimerStore) -> None:
    """A claim removes the timer from the armed set, so a second claim within the lease gets nothing."""
    store.arm("a", NOW - SECOND)

    assert store.claim(NOW, LEASE, limit=10) == [("a", NOW - SECOND)]
    assert store.due_ms("a") is None
    assert store.armed_count() == 0
    assert store.claim(NOW + LEASE - 1, LEASE, limit=10) == []


def test_expired_lease_hands_the_timer_out_again_with_its_original_due(store: TimerStore) -> None:
    """An unacked claim comes back once its lease expires, with the due time it was first claimed at."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)

    assert store.claim(NOW + LEASE, LEASE, limit=10) == [("a", NOW - SECOND)]


def test_redelivered_claim_gets_a_fresh_lease(store: TimerStore) -> None:
    """A re-delivered claim is leased again from the moment of re-delivery."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)
    store.claim(NOW + LEASE, LEASE, limit=10)

    assert store.claim(NOW + 2 * LEASE - 1, LEASE, limit=10) == []
    assert store.claim(NOW + 2 * LEASE, LEASE, limit=10) == [("a", NOW - SECOND)]


def test_ack_prevents_redelivery(store: TimerStore) -> None:
    """An acked claim is never handed out again, however much time passes."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)
    store.ack("a")

    assert store.claim(NOW + 100 * LEASE, LEASE, limit=10) == []
    assert store.next_wakeup_ms() is None


def test_a_released_claim_is_handed_out_at_the_next_claim_with_its_first_due(store: TimerStore) -> None:
    """A claim put back is handed out by the very next claim, not after its lease, with the due time it was claimed at."""
    store.arm("a", NOW - SECOND)
    store.arm("b", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)

    assert store.release_claims([("a", NOW - SECOND)], NOW + 1) == 1
    assert store.next_wakeup_ms() == NOW + 1
    assert store.claim(NOW + 1, LEASE, limit=10) == [("a", NOW - SECOND)]
    assert store.claim(NOW + 2, LEASE, limit=10) == []  # b keeps its lease; a has a fresh one


def test_release_leaves_a_newer_claim_and_an_acked_one_alone(store: TimerStore) -> None:
    """Putting back a claim for a due time no longer held (re-armed and claimed again, or acked) changes nothing."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)
    store.arm("a", NOW + SECOND)
    store.claim(NOW + SECOND, LEASE, limit=10)  # the re-arm came due: a newer claim
    store.arm("b", NOW - SECOND)
    store.claim(NOW + SECOND, LEASE, limit=10)
    store.ack_claims([("b", NOW - SECOND)])

    assert store.release_claims([("a", NOW - SECOND), ("b", NOW - SECOND)], NOW + 2 * SECOND) == 0
    assert store.claim(NOW + 2 * SECOND, LEASE, limit=10) == []


def test_a_release_wakes_a_waiting_scheduler(store: TimerStore) -> None:
    """A claim put back ends a scheduler's wait at once, so it is claimed again without a poll."""
    store.arm("a", NOW - SECOND)
    store.wait(30)  # takes the nudge the arm left
    store.claim(NOW, LEASE, limit=10)
    assert _ends_a_wait(store, lambda: store.release_claims([("a", NOW - SECOND)], NOW + 1)), (
        "wait() was not ended by the release"
    )


def test_ack_of_an_unclaimed_timer_is_harmless(store: TimerStore) -> None:
    """Acking a timer that holds no claim leaves an armed timer of the same name alone."""
    store.arm("a", NOW + HOUR)
    store.ack("a")

    assert store.due_ms("a") == NOW + HOUR


def test_ack_many_drops_every_lease(store: TimerStore) -> None:
    """ack_many has the effect of ack on each member."""
    store.arm_many([("a", NOW - 2), ("b", NOW - 1), ("c", NOW)])
    store.claim(NOW, LEASE, limit=10)
    store.ack_many(["a", "c"])

    assert store.claim(NOW + LEASE, LEASE, limit=10) == [("b", NOW - 1)]


def test_arm_many_arms_in_order(store: TimerStore) -> None:
    """arm_many has the effect of arm on each item in order: a repeated member keeps its last due time."""
    store.arm_many([("a", NOW), ("b", NOW + 1), ("a", NOW + 2)])

    assert store.armed_count() == 2
    assert store.due_ms("a") == NOW + 2
    assert store.due_ms("b") == NOW + 1


def test_rearm_while_leased_keeps_the_timer_leased_and_armed(store: TimerStore) -> None:
    """Re-arming a claimed timer arms it anew without touching the claim; ack drops only the claim."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)
    store.arm("a", NOW + HOUR)
    store.ack("a")

    assert store.due_ms("a") == NOW + HOUR
    assert store.claim(NOW + LEASE, LEASE, limit=10) == []
    assert store.claim(NOW + HOUR, LEASE, limit=10) == [("a", NOW + HOUR)]


def test_unacked_claim_and_its_rearm_both_due_are_handed_out_once(store: TimerStore) -> None:
    """A member both lease-expired and armed-due is handed out once, with the earlier due, then fully gone."""
    store.arm("a", NOW - SECOND)
    store.claim(NOW, LEASE, limit=10)
    store.arm("a", NOW + SECOND)

    assert store.claim(NOW + LEASE, LEASE, limit=10) == [("a", NOW - SECOND)]
    assert store.armed_count() == 0
    store.ack("a")
    assert store.claim(NOW + 10 * LEASE, LEASE, limit=10) == []


def test_expired_claims_and_due_timers_share_the_limit_earliest_due_first(store: TimerStore) -> None:
    """Lease-expired claims and newly due timers are merged by due time under one limit."""
    store.arm("old", NOW - HOUR)
    store.claim(NOW - HOUR, LEASE, limit=10)
    store.arm("new", NOW - SECOND)
    store.arm("newer", NOW)

    assert store.claim(NOW, LEASE, limit=2) == [("old", NOW - HOUR), ("new", NOW - SECOND)]
    assert store.claim(NOW, LEASE, limit=2) == [("newer", NOW)]


def test_claim_hands_out_batches_larger_than_a_thousand(store: TimerStore) -> None:
    """A single claim can hand out, and later re-deliver, thousands of timers at once."""
    items = [(f"t{i:05d}", NOW - i) for i in range(2_500)]
    store.arm_many(items)
    expected = sorted(items, key=lambda item: item[1])

    assert store.claim(NOW, LEASE, limit=5_000) == expected
    assert store.claim(NOW + LEASE, LEASE, limit=5_000) == expected
    store.ack_many(member for member, _ in items)
    assert store.next_wakeup_ms() is None


def test_claim_rejects_a_limit_or_lease_below_one(store: TimerStore) -> None:
    """claim refuses limit < 1 and lease_ms < 1 rather than guessing what was meant."""
    with pytest.raises(ValueError, match="limit"):
        store.claim(NOW, LEASE, limit=0)
    with pytest.raises(ValueError, match="lease_ms"):
        store.claim(NOW, 0, limit=1)


def test_next_wakeup_is_the_earliest_due_time_or_lease_expiry(store: TimerStore) -> None:
    """next_wakeup_ms is None when idle, else the minimum of armed due times and lease expiries."""
    assert store.next_wakeup_ms() is None

    store.arm("a", NOW + HOUR)
    assert store.next_wakeup_ms() == NOW + HOUR

    store.arm("b", NOW - SECOND)
    assert store.next_wakeup_ms() == NOW - SECOND

    store.claim(NOW, LEASE, limit=10)
    assert store.next_wakeup_ms() == NOW + LEASE

    store.ack("b")
    assert store.next_wakeup_ms() == NOW + HOUR


def test_armed_count_counts_armed_timers_only(store: TimerStore) -> None:
    """armed_count counts armed timers; claims in flight are not armed."""
    store.arm_many([(f"t{i}", NOW + i) for i in range(5)])
    store.claim(NOW + 1, LEASE, limit=10)

    assert store.armed_count() == 3


def test_wait_zero_returns_at_once(store: TimerStore) -> None:
    """wait(0) does not block."""
    started = time.monotonic()
    store.wait(0)

    assert time.monotonic() - started < 1.0


def test_wait_returns_when_an_earlier_timer_is_armed_from_another_thread(store: TimerStore) -> None:
    """A scheduler waiting for a later timer is woken as soon as an earlier timer is armed."""
    store.arm("late", NOW + HOUR)
    store.wait(30)  # takes the nudge the first timer left

    assert _ends_a_wait(store, lambda: store.arm("early", NOW)), "wait() was not woken by an earlier timer"


def _ends_a_wait(store: TimerStore, action: Callable[[], object]) -> bool:
    """Whether ``action``, done while another thread waits on ``store`` (up to 30 s), ends that wait."""
    waiting = threading.Event()
    woke = threading.Event()

    def scheduler() -> None:
        waiting.set()
        store.wait(30)
        woke.set()

    thread = threading.Thread(target=scheduler, daemon=True)
    thread.start()
    assert waiting.wait(10)
    action()
    ended = woke.wait(10)
    thread.join(10)
    return ended


def test_concurrent_claimers_get_each_timer_exactly_once(store: TimerStore) -> None:
    """Four schedulers claiming at once receive every due timer, each exactly once."""
    members = [f"u|INC-{i:04d}|acme-finance" for i in range(1_000)]
    store.arm_many((m, NOW - i) for i, m in enumerate(members))
    start = threading.Barrier(4)
    received: list[list[tuple[str, int]]] = [[] for _ in range(4)]

    def scheduler(n: int) -> None:
        start.wait()
        while batch := store.claim(NOW, LEASE, limit=25):
            received[n].extend(batch)

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    handed = [item for batch in received for item in batch]
    assert len(handed) == len(members)
    assert sorted(handed) == sorted((m, NOW - i) for i, m in enumerate(members))


MEMBERS = [f"m{i}" for i in range(6)]


@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["arm", "cancel"]), st.sampled_from(MEMBERS), st.integers(0, 100))
    ),
    now_ms=st.integers(0, 100),
)
def test_claim_returns_exactly_the_timers_whose_last_due_has_passed(
    ops: list[tuple[str, str, int]], now_ms: int
) -> None:
    """After any arm/cancel history, claim(now) returns exactly the armed members whose last due <= now."""
    store = MemoryTimerStore()
    armed: dict[str, int] = {}
    for op, member, due_ms in ops:
        if op == "arm":
            store.arm(member, due_ms)
            armed[member] = due_ms
        else:
            assert store.cancel(member) is (armed.pop(member, None) is not None)

    claimed = store.claim(now_ms, LEASE, limit=len(MEMBERS))

    assert dict(claimed) == {m: due for m, due in armed.items() if due <= now_ms}
    assert [due for _, due in claimed] == sorted(due for _, due in claimed)
    assert store.armed_count() == sum(due > now_ms for due in armed.values())


_Op = tuple[str, str, int] | tuple[str, str] | tuple[str, int, int, int]

_op: st.SearchStrategy[_Op] = st.one_of(
    st.tuples(st.just("arm"), st.sampled_from(MEMBERS), st.integers(0, 60)),
    st.tuples(st.just("cancel"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("claim"), st.integers(0, 100), st.integers(1, 30), st.integers(1, 4)),
    st.tuples(st.just("ack"), st.sampled_from(MEMBERS)),
)


def _apply(store: TimerStore, op: _Op) -> object:
    match op:
        case ("arm", str(member), int(due_ms)):
            return store.arm(member, due_ms)  # type: ignore[func-returns-value]
        case ("cancel", str(member)):
            return store.cancel(member)
        case ("claim", int(now_ms), int(lease_ms), int(limit)):
            return store.claim(now_ms, lease_ms, limit)
        case ("ack", str(member)):
            return store.ack(member)  # type: ignore[func-returns-value]
    raise AssertionError(op)


@pytest.mark.real
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=30))
def test_memory_and_redis_stores_agree_on_any_history(redis_client: redis.Redis, ops: list[_Op]) -> None:
    """The in-memory store answers every arm/cancel/claim/ack history exactly as the Redis store does."""
    redis_client.flushdb()
    memory, real = MemoryTimerStore(), RedisTimerStore(redis_client)
    for op in ops:
        assert _apply(memory, op) == _apply(real, op), op
        assert memory.next_wakeup_ms() == real.next_wakeup_ms(), op
        assert memory.armed_count() == real.armed_count(), op
    for member in MEMBERS:
        assert memory.due_ms(member) == real.due_ms(member)


@pytest.mark.real
def test_only_an_earlier_timer_leaves_a_nudge_and_never_more_than_one(
    redis_client: redis.Redis, redis_store: RedisTimerStore
) -> None:
    """Arming leaves a nudge only when the timer is the new earliest of its shard (one
    incident's timers share a shard), and at most one nudge is kept."""
    a, b, c, d, e = (f"u|INC-1|{s}" for s in "abcde")
    redis_store.arm(a, NOW + HOUR)
    redis_store.arm(b, NOW + 2 * HOUR)
    assert redis_client.llen(keys.TIMERS_WAKE) == 1

    redis_store.wait(30)
    redis_store.arm(c, NOW + 3 * HOUR)
    redis_store.arm(a, NOW + HOUR)
    assert redis_client.llen(keys.TIMERS_WAKE) == 0

    redis_store.arm(d, NOW)
    redis_store.arm(e, NOW - 1)
    assert redis_client.llen(keys.TIMERS_WAKE) == 1


@pytest.mark.real
def test_wait_longer_than_the_socket_timeout_does_not_fail(redis_url: str, redis_client: redis.Redis) -> None:
    """wait() blocks in slices, so a client socket timeout shorter than the wait is not an error."""
    client = redis.Redis.from_url(redis_url, socket_timeout=0.3)
    try:
        started = time.monotonic()
        RedisTimerStore(client).wait(0.8)
        assert time.monotonic() - started < 10
    finally:
        client.close()


def test_redis_errors_become_timer_store_errors() -> None:
    """A Redis failure surfaces as TimerStoreError with the Redis error as its cause."""
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = RedisTimerStore(client)

    with pytest.raises(TimerStoreError, match="could not claim") as caught:
        store.claim(NOW, LEASE, limit=1)
    assert isinstance(caught.value.__cause__, redis.RedisError)

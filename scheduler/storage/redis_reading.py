"""Reading the Redis store: the log and the incidents newest first across the shards, an
incident's own communications, and the figures kept as things happen."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, cast

import redis

from scheduler.core.model import Communication, Incident, Thread, ms_of, text_of
from scheduler.core.ports import Counters, Cursor
from scheduler.storage import keys
from scheduler.storage.texts import INLINE_CONTEXT, Texts, context_blob, unpack_message

__all__ = ["RedisReading"]

_PAGE_SLICE = 200
"""Log entries read per round trip while a page is filled."""

_LISTED = (*Communication.LISTED_FIELDS, INLINE_CONTEXT)
"""What a list of communications reads of each hash (and its context, when kept there)."""


def with_texts(
    fields: dict[Any, Any], context: bytes | None, message: bytes | None, *, whole: bool
) -> dict[Any, Any]:
    """A communication's hash fields with its texts (:mod:`~scheduler.storage.texts`) added,
    as :meth:`Communication.from_hash` reads them; the message as sent only when ``whole``."""
    fields.pop(INLINE_CONTEXT, None)
    fields.pop(INLINE_CONTEXT.encode(), None)
    if context is not None:
        fields["context"] = context
    for name, value in unpack_message(message).items():
        if whole or name != "message":
            fields[name] = value
    return fields


class RedisReading:
    """The read side of :class:`~scheduler.storage.redis_store.RedisStore`."""

    client: redis.Redis
    texts: Texts

    def listed(self, comm_ids: list[str]) -> list[Communication | None]:
        """Each communication as a list shows it (all but the message as sent), None where it
        is gone; in one round trip, and one more for references this process has not read."""
        pipe = self.client.pipeline(transaction=False)
        for comm_id in comm_ids:
            pipe.hmget(keys.comm(comm_id), _LISTED)
            pipe.get(keys.comm_context(comm_id))
            pipe.get(keys.comm_message(comm_id))
        replies = pipe.execute()
        incident_ids = [keys.incident_of_comm(c) for c in comm_ids]
        contexts = self.texts.unpack_many(
            incident_ids,
            [
                context_blob({INLINE_CONTEXT: v[-1]}, c)
                for v, c in zip(replies[0::3], replies[1::3], strict=True)
            ],
        )
        messages = self.texts.unpack_many(incident_ids, replies[2::3])
        out: list[Communication | None] = []
        for values, context, message in zip(replies[0::3], contexts, messages, strict=True):
            found = {name: value for name, value in zip(_LISTED, values, strict=True) if value is not None}
            out.append(
                Communication.from_hash(with_texts(found, context, message, whole=False)) if found else None
            )
        return out

    def incidents(self, incident_ids: list[str]) -> list[Incident]:
        """The incidents of ``incident_ids`` that exist, in that order, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for incident_id in incident_ids:
            pipe.get(keys.incident(incident_id))
        return [Incident.from_json(json.loads(raw)) for raw in pipe.execute() if raw]

    def incident_ids(self) -> list[str]:
        """Every incident id, oldest opened first."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.zrange(keys.incidents(shard), 0, -1, withscores=True)
        found = [(int(score), text_of(i)) for entries in pipe.execute() for i, score in entries]
        return [i for _, i in sorted(found)]

    def incident_page(
        self, limit: int, before: Cursor | None = None, since_ms: int | None = None
    ) -> tuple[list[str], Cursor | None]:
        """Up to ``limit`` incident ids, newest opened first, after ``before`` and opened at
        ``since_ms`` or later; and the next cursor."""
        newest = self._newest_first(keys.incidents, before, since_ms, slice_=limit + 1)
        picked = list(itertools.islice(newest, limit + 1))
        following = picked[limit - 1] if len(picked) > limit else None
        return [i for _, i in picked[:limit]], following

    def _newest_first(
        self, index: Callable[[int], str], before: Cursor | None, since_ms: int | None = None, slice_: int = 0
    ) -> Iterator[Cursor]:
        """A sharded sorted set's (score, member) pairs from the highest score down, strictly
        after ``before`` (equal scores go by member, also descending), down to ``since_ms``:
        the shards ``index(shard)`` merged, each read in slices of ``slice_`` (default
        ``_PAGE_SLICE``), the first slice of every shard in one round trip."""
        high: int | str = before[0] if before else "+inf"
        low: int | str = since_ms if since_ms is not None else "-inf"
        size = slice_ or _PAGE_SLICE
        pipe = self.client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.zrevrangebyscore(index(shard), high, low, start=0, num=size, withscores=True)
        firsts = pipe.execute()
        shards = (
            self._shard_newest_first(index(s), high, low, before, size, firsts[s]) for s in range(keys.SHARDS)
        )
        return heapq.merge(*shards, reverse=True)

    def _shard_newest_first(
        self, key: str, high: int | str, low: int | str, before: Cursor | None, size: int, chunk: Any
    ) -> Iterator[Cursor]:
        offset = 0
        while chunk:
            offset += len(chunk)
            for member, score in chunk:
                entry = (int(score), text_of(member))
                if before is None or entry < before:
                    yield entry
            if len(chunk) < size:
                return
            chunk = self.client.zrevrangebyscore(key, high, low, start=offset, num=size, withscores=True)

    def incident_comms(self, *incident_ids: str) -> list[Communication]:
        """The incidents' communications, each incident's oldest first, read through their
        own indexes in two round trips."""
        pipe = self.client.pipeline(transaction=False)
        for incident_id in incident_ids:
            pipe.zrange(keys.incident_comms(incident_id), 0, -1)
        ids = [text_of(c) for found in pipe.execute() for c in found]
        return [c for c in self.listed(ids) if c is not None]

    def threads(self, pairs: list[tuple[str, str]]) -> list[Thread]:
        """The threads of (incident, stakeholder) ``pairs``, in that order, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for incident_id, stakeholder_id in pairs:
            pipe.hgetall(keys.thread(incident_id, stakeholder_id))
        return [Thread.from_hash(raw) for raw in pipe.execute()]

    def counters(self) -> Counters:
        """The figures kept as things happen, summed over the shards."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.hgetall(keys.counters(shard))
        return Counters.summed({text_of(k): int(v) for k, v in raw.items()} for raw in pipe.execute())

    def page(
        self,
        keep: Callable[[Communication], bool],
        limit: int,
        before: Cursor | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Communication], Cursor | None]:
        """Up to ``limit`` communications that ``keep``, newest first, created before ``before``
        (a cursor from the page before) and not before ``since``; and the cursor of the next
        page, None when there is no more. Reads the log index backwards in slices."""
        found: list[Communication] = []
        first = min(limit, _PAGE_SLICE)  # unfiltered, the first slice is the page
        entries = self._newest_first(keys.log, before, ms_of(since) if since else None, slice_=first)
        while batch := list(itertools.islice(entries, first if not found else _PAGE_SLICE)):
            for entry, comm in zip(batch, self.listed([comm_id for _, comm_id in batch]), strict=True):
                if comm is not None and keep(comm):
                    found.append(comm)
                    if len(found) == limit:
                        return found, entry  # the log's own score: no round trip through a float
        return found, None

    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]:
        """Every communication in creation order, oldest first, from ``since`` on."""
        low: int | str = ms_of(since) if since else "-inf"
        shards = (self._shard_oldest_first(keys.log(s), low, batch) for s in range(keys.SHARDS))
        entries = heapq.merge(*shards)
        while ids := [comm_id for _, comm_id in itertools.islice(entries, batch)]:
            yield from (comm for comm in self.listed(ids) if comm is not None)

    def _shard_oldest_first(self, key: str, low: int | str, batch: int) -> Iterator[Cursor]:
        start = 0
        while chunk := cast(
            "list[tuple[bytes, float]]",
            self.client.zrangebyscore(key, low, "+inf", start=start, num=batch, withscores=True),
        ):
            start += len(chunk)
            for member, score in chunk:
                yield int(score), text_of(member)

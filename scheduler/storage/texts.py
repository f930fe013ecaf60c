"""A communication's long texts, kept apart from its hash and compressed against a sibling's.

A communication's hash holds short fields only (ids, status, times), so Redis keeps it as a
compact listpack; one value over 64 bytes would turn it into a hashtable of about 80 bytes
per field. Its long texts live in two strings of the same slot:

- ``ctx:{comm_id}``, written when it is created: the template context (``context``), or in
  the hash as ``ctx_z`` when it packs into 64 bytes, as a sibling's usually does;
- ``msg:{comm_id}``, written when an attempt ends: ``subject``, ``message_id``,
  ``server_reply`` and the message as sent (``message``).

Each is JSON compressed with zlib against a *reference*: an earlier text of the same incident,
kept once under ``ref:{incident}:{token}`` and never changed. The 200 acknowledgments of a
fan-out differ only in a name, an address and a few signed links, so each compresses to a
few hundred bytes instead of 1.5 KB. A process keeps, per incident and part, the reference
it compresses against, and starts a new one (from the text at hand) when a text compresses
poorly against it. References are removed with their incident (``refs:{incident}`` lists
them) and, being immutable, are cached by every reader.

A stored text is ``token`` NUL ``deflate(text, zdict=reference)``; the context is stored
as its JSON, the message part as JSON of its four fields.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from scheduler.errors import StorageError
from scheduler.storage import keys

__all__ = ["INLINE_CONTEXT", "INLINE_MAX", "MESSAGE_FIELDS", "Texts", "context_blob", "unpack_message"]

INLINE_CONTEXT = "ctx_z"
INLINE_MAX = 64
"""A packed context this short (most are, against a sibling's) is kept in the hash itself as
``ctx_z``, which a listpack holds in a few bytes more than its length: a key of its own would
cost about 150 bytes."""

MESSAGE_FIELDS = ("subject", "message_id", "server_reply", "message")
"""What ``msg:{comm_id}`` keeps: the fields of a communication that an attempt writes and
that may be longer than a listpack value."""

_LEVEL = 6
_CACHED_REFERENCES = 512
_POOR = 8
"""A text that compresses to more than 1/8 of its size against the reference starts a new one."""


def _deflate(plain: bytes, reference: bytes) -> bytes:
    packer = zlib.compressobj(_LEVEL, zdict=reference)
    return packer.compress(plain) + packer.flush()


class Texts:
    """Packs and unpacks the long texts of communications for one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._references: OrderedDict[str, bytes] = OrderedDict()
        """ref key -> its text: every reference this process wrote or read (they never change)."""
        self._current: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        """(incident, part) -> (token, ref key) this process compresses that part against."""

    def pack(self, incident_id: str, part: str, plain: bytes) -> bytes:
        """``plain`` as stored; may first write a new reference for the incident (from it).
        ``part`` names what it is ("ctx", "msg"): each is compressed against its own kind."""
        with self._lock:
            current = self._current.get((incident_id, part))
        if current is not None:
            token, ref_key = current
            reference = self._cached(ref_key)
            if reference is not None:
                packed = _deflate(plain, reference)
                if len(packed) * _POOR <= len(plain):
                    return token.encode() + b"\0" + packed
        token = uuid.uuid4().hex[:12]
        ref_key = keys.text_reference(incident_id, token)
        pipe = self.client.pipeline(transaction=False)
        # Listed before it exists: a crash in between leaves retention a name to delete, not a key to miss.
        pipe.sadd(keys.text_references(incident_id), token)
        pipe.set(ref_key, zlib.compress(plain, _LEVEL))
        pipe.execute()
        with self._lock:
            self._remember(ref_key, plain)
            self._current[(incident_id, part)] = (token, ref_key)
            self._current.move_to_end((incident_id, part))
            while len(self._current) > _CACHED_REFERENCES:
                self._current.popitem(last=False)
        return token.encode() + b"\0" + _deflate(plain, plain)

    def unpack_many(self, incident_ids: Iterable[str], raws: Iterable[bytes | None]) -> list[bytes | None]:
        """Each stored text as it was packed (None for None), reading the references this
        process has not seen yet in one round trip."""
        stored: list[tuple[str, bytes] | None] = []
        for incident_id, raw in zip(incident_ids, raws, strict=True):
            if raw:
                token, _, packed = raw.partition(b"\0")
                stored.append((keys.text_reference(incident_id, token.decode()), packed))
            else:
                stored.append(None)
        missing = list({e[0] for e in stored if e is not None and self._cached(e[0]) is None})
        if missing:
            pipe = self.client.pipeline(transaction=False)
            for ref_key in missing:
                pipe.get(ref_key)
            found = dict(zip(missing, pipe.execute(), strict=True))
            with self._lock:
                for ref_key, reference in found.items():
                    if reference is not None:
                        self._remember(ref_key, zlib.decompress(reference))
        out: list[bytes | None] = []
        for entry in stored:
            if entry is None:
                out.append(None)
                continue
            ref_key, packed = entry
            reference = self._cached(ref_key)
            if reference is None:
                raise StorageError(
                    f"a stored communication text is compressed against {ref_key}, which is gone"
                )
            unpacker = zlib.decompressobj(zdict=reference)
            out.append(unpacker.decompress(packed) + unpacker.flush())
        return out

    def pack_message(self, incident_id: str, fields: Mapping[str, Any]) -> bytes:
        return self.pack(incident_id, "msg", json.dumps(fields, separators=(",", ":")).encode())

    def _cached(self, ref_key: str) -> bytes | None:
        with self._lock:
            found = self._references.get(ref_key)
            if found is not None:
                self._references.move_to_end(ref_key)
            return found

    def _remember(self, ref_key: str, plain: bytes) -> None:
        self._references[ref_key] = plain
        self._references.move_to_end(ref_key)
        while len(self._references) > _CACHED_REFERENCES:
            self._references.popitem(last=False)


def unpack_message(plain: bytes | None) -> dict[str, Any]:
    """The fields of a message part as :meth:`Texts.pack_message` packed them."""
    return cast("dict[str, Any]", json.loads(plain)) if plain else {}


def context_blob(fields: Mapping[Any, Any], stored: bytes | None) -> bytes | None:
    """A communication's packed context: at ``ctx:{comm_id}`` (``stored``) or in its hash."""
    return stored or fields.get(INLINE_CONTEXT.encode()) or fields.get(INLINE_CONTEXT)

"""Keeps tokens and link signatures out of uvicorn's access log: secret-looking query values are redacted."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

__all__ = ["RedactSecrets", "redacted"]

_SECRET_NAME = re.compile(r"(?i)token|sig|secret|passw|key|auth")


def redacted(target: str) -> str:
    """``target`` (a path with its query) with the value of every secret-looking query
    field replaced; names are decoded first, so ``%74oken`` is seen as ``token``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    fields = []
    for field in re.split(r"[&;]", query):
        name, equals, _ = field.partition("=")
        decoded = name
        for _ in range(4):  # %2574oken decodes to %74oken, then to token
            decoded = unquote(decoded.replace("+", " "))
        fields.append(f"{name}=[redacted]" if equals and _SECRET_NAME.search(decoded) else field)
    return f"{path}?{'&'.join(fields)}"


class RedactSecrets(logging.Filter):
    """Keeps tokens and link signatures in query strings out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redacted(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        return True

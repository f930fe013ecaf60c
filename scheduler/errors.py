"""One exception root for amends; errors from libraries are translated at the edge."""

from __future__ import annotations

__all__ = [
    "AmendsError",
    "ConfigError",
    "DeliveryError",
    "EventError",
    "PermanentDeliveryError",
    "RedisUnavailableError",
    "SettingsError",
    "StorageError",
    "TemplateError",
    "TimerStoreError",
    "TransientDeliveryError",
    "UndeliverableError",
]


class AmendsError(Exception):
    """Base class of every error amends raises on purpose."""


class SettingsError(AmendsError):
    """The environment is missing or has a malformed setting."""


class FieldErrors(AmendsError):
    """An error that lists problems, each with the place it was found."""

    def __init__(self, what: str, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        lines = "\n".join(f"  {place}: {reason}" if place else f"  {reason}" for place, reason in errors)
        super().__init__(f"{what}:\n{lines}")


class ConfigError(FieldErrors):
    """The configuration file is invalid; ``errors`` holds (place, reason) pairs."""


class EventError(FieldErrors):
    """An incident event is invalid; ``errors`` holds (field, reason) pairs."""


class TemplateError(AmendsError):
    """A template is missing, does not compile, or failed to render."""


class StorageError(AmendsError):
    """The store could not be read or written; worth retrying once it answers again."""


class RedisUnavailableError(StorageError):
    """Redis did not answer; nothing was written."""


class TimerStoreError(StorageError):
    """The timer store could not be read or written."""


class DeliveryError(AmendsError):
    """A message could not be handed to the SMTP server."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying: connection trouble or a 4xx reply.

    ``retry_after_s``, when set, is how long the receiver asked us to wait (HTTP 429 or
    503 with ``Retry-After``): the next attempt must come no earlier. ``throttled`` says the
    receiver asked us to slow down (SMTP 421 or 454, HTTP 429): the send rate pauses.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.throttled = throttled


class PermanentDeliveryError(DeliveryError):
    """Not worth retrying: the server refused with a 5xx reply."""


class UndeliverableError(PermanentDeliveryError):
    """The server refused the recipient or the message for good (5xx to RCPT or DATA):
    the address is marked undeliverable."""

"""amends: keep every stakeholder of an incident informed, on the cadence they were promised."""

from scheduler.core.events import Event, parse_event
from scheduler.errors import AmendsError, ConfigError, EventError
from scheduler.service.emitting import emit

__all__ = ["AmendsError", "ConfigError", "Event", "EventError", "emit", "parse_event"]

"""amends: keep every stakeholder of an incident informed, on the cadence they were promised."""

from scheduler.emitting import emit
from scheduler.errors import AmendsError, ConfigError, EventError
from scheduler.events import Event, parse_event

__all__ = ["AmendsError", "ConfigError", "Event", "EventError", "emit", "parse_event"]

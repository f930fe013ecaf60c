"""amends' Dramatiq workers: the actors that apply events, fire timers and send mail."""

from workers.actors import ACTORS, bind
from workers.runtime import configure

__all__ = ["ACTORS", "bind", "configure"]

"""How messages sound: an apology that fits the severity, wording that changes along a thread.

Pure functions of (severity, kind, incident, stakeholder, sequence): the same message
always reads the same, and consecutive messages of one thread never repeat a sentence.
Templates get the result as ``tone`` (see ``templates/README.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["WEIGHTS", "tone_for", "weight_of"]

WEIGHTS = {"sev1": "grave", "sev2": "serious", "sev3": "light", "sev4": "light"}
"""How heavy an apology each severity calls for."""

_APOLOGY: dict[str, dict[str, Sequence[str]]] = {
    "acknowledgment": {
        "grave": (
            "This is our responsibility, and we are truly sorry. You rely on us, and right now "
            "we are letting you down.",
            "This failure is our responsibility, and we are deeply sorry for the disruption it is "
            "causing you.",
            "We take full responsibility for this, and we are sorry: you depend on it, and it is "
            "not working.",
        ),
        "serious": (
            "This is our responsibility, and we are sorry for the trouble it causes you.",
            "This is our responsibility, and we are sorry for the disruption.",
            "We take responsibility for this, and we are sorry it gets in your way.",
        ),
        "light": (
            "This is our responsibility; sorry for the inconvenience.",
            "It is on our side and our responsibility; we are sorry for the inconvenience.",
            "We take responsibility for it, and we are sorry for the trouble.",
        ),
    },
    "update": {
        "grave": (
            "We know this is still hurting your work, and we are sorry.",
            "Every minute of this matters to you, and we are treating it that way.",
            "We have not forgotten what this costs you; fixing it has our full attention.",
            "We are sorry this is taking as long as it is.",
        ),
        "serious": (
            "We know this is still getting in your way, and we are sorry.",
            "Thank you for your patience while we work on it.",
            "We are sorry it is not fixed yet.",
            "Fixing this remains our priority.",
        ),
        "light": (
            "Thank you for your patience.",
            "We will keep you posted.",
            "Thanks for bearing with us.",
        ),
    },
    "resolution": {
        "grave": (
            "This was our responsibility. We are truly sorry for the disruption it caused you, "
            "and thank you for your patience.",
            "This was our responsibility, and we let you down: we are sorry. Thank you for bearing "
            "with us while we fixed it.",
        ),
        "serious": (
            "This was our responsibility. We are sorry for the disruption it caused you, and thank "
            "you for your patience.",
            "This was our responsibility, and we are sorry for the trouble it caused. Thank you for "
            "your patience.",
        ),
        "light": (
            "This was our responsibility; sorry for the inconvenience, and thank you for your patience.",
            "This was our responsibility. Thanks for bearing with us, and sorry for the trouble.",
        ),
    },
    "feedback_request": {
        "grave": ("Thank you again for your patience during a difficult time.",),
        "serious": ("Thank you again for your patience.",),
        "light": ("Thank you for your patience.",),
    },
}

_COLLEAGUE: dict[str, dict[str, Sequence[str]]] = {
    "acknowledgment": {
        "grave": (
            "This one is ours, and customers are feeling it now; it has the team's full attention.",
            "Customers are hit hard by this and it is on us; everything else waits until it is fixed.",
            "This is our failure and it is hurting customers; it is the team's top priority.",
        ),
        "serious": (
            "This one is ours; customers notice it, and it is the team's priority.",
            "It is on us and customers are affected; the team is on it.",
            "Ours to fix; customers feel it, and the team is focused on it.",
        ),
        "light": (
            "Small in scope, but ours to fix.",
            "Minor, and on us; the team is on it.",
            "Limited impact; we own it and are on it.",
        ),
    },
    "update": {
        "grave": (
            "Customers are still affected; fixing it has the team's full attention.",
            "It is still hurting customers; nothing else comes first.",
            "Every minute counts for customers, and we are treating it that way.",
            "It is taking longer than we want; the team is on it without pause.",
        ),
        "serious": (
            "Customers are still affected; it remains the team's priority.",
            "Not fixed yet; the team stays on it.",
            "It stays our priority until it is fixed.",
        ),
        "light": (
            "Nothing is needed from you.",
            "No action needed on your side.",
            "We will keep you posted.",
        ),
    },
    "resolution": {
        "grave": (
            "This was ours, and it hurt customers; the review will say what we change.",
            "This one was on us; customers and you are owed a clear account of what changes.",
        ),
        "serious": (
            "This was ours to fix; the review will say what we change.",
            "This was on us; the follow-up work is tracked.",
        ),
        "light": (
            "Small, but ours; the follow-up is tracked.",
            "Minor and on us; nothing is needed from you.",
        ),
    },
    "feedback_request": {
        "grave": ("Thanks for staying close to this one.",),
        "serious": ("Thanks for following this one.",),
        "light": ("Thanks for following along.",),
    },
}
"""The same weight said by one colleague to another: ownership and what it means for
customers, without a vendor's apology to its customer (for internal audiences)."""

_STILL_WORKING = (
    "The team is still working on it",
    "Work on it continues",
    "We are still on it",
    "Our team continues to work on it",
)


def weight_of(severity: str) -> str:
    """``grave``, ``serious`` or ``light``; an unknown severity is treated as serious."""
    return WEIGHTS.get(severity, "serious")


def _pick(options: Sequence[str], offset: int, sequence: int) -> str:
    # consecutive messages of a thread take consecutive options: never the same twice in a row
    return options[(offset + sequence) % len(options)]


_WORDED_AS = {"follow_up": "resolution", "review": "resolution", "review_delayed": "resolution"}
"""Messages after an incident are worded as its resolution is: it is over, and it was ours."""


def tone_for(
    severity: str, kind: str, incident_id: str, stakeholder_id: str, sequence: int
) -> dict[str, str]:
    """The ``tone`` a template gets: ``weight``, ``apology``, ``colleague`` and ``still_working``.

    Each thread starts at its own place in the wording (a hash of the incident and the
    stakeholder), so two readers of one incident need not read identical mail either.
    """
    kind = _WORDED_AS.get(kind, kind)
    digest = hashlib.sha256(f"{incident_id}\0{stakeholder_id}".encode()).digest()
    offset = int.from_bytes(digest[:4], "big")
    weight = weight_of(severity)
    apologies = _APOLOGY.get(kind, _APOLOGY["update"])[weight]
    colleague = _COLLEAGUE.get(kind, _COLLEAGUE["update"])[weight]
    return {
        "weight": weight,
        "apology": _pick(apologies, offset, sequence),
        "colleague": _pick(colleague, offset, sequence),
        "still_working": _pick(_STILL_WORKING, offset, sequence),
    }

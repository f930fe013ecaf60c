"""The configuration file: who the stakeholders are and what they were promised.

``load_config(path)`` returns a validated :class:`Config` or raises
:class:`~scheduler.errors.ConfigError` listing every problem with its place
(``stakeholders[2].timezone: unknown time zone 'Europe/Berln'``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from scheduler.core._validation import field_errors
from scheduler.core.config_fields import (
    SEVERITIES,
    Email,
    Identifier,
    OneLine,
    Seconds,
    Severity,
    TimeZoneName,
    Window,
    check_base_url,
    check_email,
    check_one_line,
)
from scheduler.core.durations import TimeWindow
from scheduler.errors import ConfigError

__all__ = [
    "CHANNELS",
    "DEFAULT_SEVERITY_MAP",
    "Audience",
    "Channel",
    "Config",
    "ConfigSource",
    "Contact",
    "Defaults",
    "IdPrefixes",
    "Integrations",
    "Stakeholder",
    "load_config",
    "parse_config",
    "read_yaml",
]

logger = logging.getLogger(__name__)

Cadence = dict[Severity, Seconds]

_DEFAULT_CADENCE_S: dict[Severity, int] = {"sev1": 1800, "sev2": 3600, "sev3": 4 * 3600, "sev4": 86400}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Contact(_Model):
    """The person readers can answer: named in every message, and its ``Reply-To``."""

    name: OneLine
    email: Email
    phone: OneLine | None = None
    status_page: Annotated[str, BeforeValidator(check_base_url)] | None = None


class Audience(_Model):
    """What all stakeholders of one audience (one template set) share."""

    contact: Contact | None = None


class Defaults(_Model):
    """What a stakeholder gets unless it says otherwise."""

    timezone: TimeZoneName = "UTC"
    cadence: Cadence = Field(default_factory=lambda: dict(_DEFAULT_CADENCE_S))
    feedback_after: Seconds = 86400
    quiet_hours: Window | None = None
    quiet_hours_override: list[Severity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _every_severity_has_a_cadence(self) -> Defaults:
        missing = [s for s in SEVERITIES if s not in self.cadence]
        if missing:
            merged = {**_DEFAULT_CADENCE_S, **self.cadence}
            object.__setattr__(self, "cadence", merged)
        return self


CHANNELS = ("email", "slack", "teams", "webhook")
Channel = Literal["email", "slack", "teams", "webhook"]


def _web_url(value: Any) -> Any:
    if isinstance(value, str) and not (
        re.match(r"^https?://[^\s/?#]+[^\s]*$", value) and value.isascii() and value.isprintable()
    ):
        raise ValueError("is not a web address like https://hooks.slack.com/services/…")
    return value


WebURL = Annotated[str, BeforeValidator(_web_url), Field(max_length=2000)]


class Stakeholder(_Model):
    """One person or group who is kept informed; unset fields fall back to ``defaults``.

    ``channel`` is how messages reach it: ``email`` (the default, to ``email``) or
    ``slack``, ``teams`` or ``webhook`` (to ``url``).
    """

    id: Identifier
    name: Annotated[str, BeforeValidator(check_one_line), Field(min_length=1, max_length=200)]
    email: Email | None = None
    channel: Channel = "email"
    url: WebURL | None = None
    audience: Identifier = "default"
    timezone: TimeZoneName | None = None
    services: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    severities: list[Severity] | None = None
    cadence: Cadence = Field(default_factory=dict)
    quiet_hours: Window | None = None
    quiet_hours_override: list[Severity] | None = None
    feedback_after: Seconds | None = None
    contact: Contact | None = None

    @model_validator(mode="after")
    def _address_for_the_channel(self) -> Stakeholder:
        if self.channel == "email" and self.email is None:
            raise ValueError("email: is required (or give channel: slack, teams or webhook with a url)")
        if self.channel != "email" and self.url is None:
            raise ValueError(f"url: is required when channel is {self.channel}")
        if self.channel != "email" and self.email is not None:
            raise ValueError(f"email: channel {self.channel} sends to url; remove email or the channel")
        return self

    @property
    def recipient(self) -> str:
        """Where messages go, as the log shows it: the address, or the channel and host only
        (chat webhook addresses carry their secret in the path)."""
        if self.channel == "email" or self.url is None:
            return self.email or ""
        host = self.url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
        return f"{self.channel}:{host}"

    def concerned_by(self, severity: str, services: list[str]) -> bool:
        """Whether an incident of this severity touching these services concerns this stakeholder."""
        if self.severities is not None and severity not in self.severities:
            return False
        return not self.services or bool(set(self.services) & set(services))


def _sender(value: Any) -> str:
    if not isinstance(value, str) or any(ord(c) < 32 for c in value):
        raise ValueError("must be one line like 'Acme Status <status@acme.example>'")
    address = value.rsplit("<", 1)[-1].rstrip(">").strip()
    try:
        check_email(address)
    except ValueError:
        raise ValueError(f"{value!r} is not an address like 'Acme Status <status@acme.example>'") from None
    return value


DEFAULT_SEVERITY_MAP: dict[str, Severity] = {
    "critical": "sev1",
    "error": "sev2",
    "high": "sev2",
    "warning": "sev3",
    "info": "sev4",
    "low": "sev4",
    "p1": "sev1",
    "p2": "sev2",
    "p3": "sev3",
    "p4": "sev4",
    "p5": "sev4",
}
"""Alert severities (Prometheus, Grafana), PagerDuty priorities and urgencies, lower case."""


def _prefix(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,31})?$", value):
        raise ValueError(
            f"{value!r} cannot start an incident id: use at most 32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


Prefix = Annotated[str, BeforeValidator(_prefix)]
Name = Annotated[str, BeforeValidator(check_one_line), Field(min_length=1, max_length=100)]


class IdPrefixes(_Model):
    """What each integration puts before its incident key."""

    alertmanager: Prefix = "am-"
    grafana: Prefix = "grafana-"
    pagerduty: Prefix = ""


class Integrations(_Model):
    """How Alertmanager, Grafana and PagerDuty payloads become incident fields."""

    service_label: Name = "service"
    severity_label: Name = "severity"
    title_annotation: Name = "summary"
    summary_annotation: Name = "description"
    severity_map: dict[Annotated[str, Field(min_length=1, max_length=100)], Severity] = Field(
        default_factory=dict
    )
    """Merged over DEFAULT_SEVERITY_MAP; keys are matched without regard to case."""
    default_severity: Severity = "sev3"
    id_prefix: IdPrefixes = Field(default_factory=IdPrefixes)

    def severity_of(self, value: str | None) -> Severity:
        """The severity a label value, priority or urgency maps to; ``default_severity`` otherwise."""
        if not value:
            return self.default_severity
        mapping = {**DEFAULT_SEVERITY_MAP, **{k.lower(): v for k, v in self.severity_map.items()}}
        return mapping.get(value.strip().lower(), self.default_severity)


class Config(_Model):
    """The whole configuration file."""

    sender: Annotated[str, BeforeValidator(_sender), Field(max_length=300)]
    base_url: Annotated[str, BeforeValidator(check_base_url)] = "http://localhost:8000"
    business_hours: Window | None = None
    contact: Contact | None = None
    audiences: dict[Identifier, Audience] = Field(default_factory=dict)
    kept_within: Seconds = 60
    """A message sent this long after the time promised still keeps the promise."""
    retention: Seconds = 90 * 86_400
    """A resolved incident is removed, with everything of its, this long after its resolution."""
    defaults: Defaults = Field(default_factory=Defaults)
    stakeholders: list[Stakeholder] = Field(default_factory=list)
    integrations: Integrations = Field(default_factory=Integrations)
    owners: dict[Identifier, Contact] = Field(default_factory=dict)
    """Who hears feedback and review reminders, per service; ``contact`` for the others."""
    feedback_digest_after: Seconds = 3 * 86_400
    """After the resolution: when the owner gets every rating and comment of the incident."""
    review_reminder_before: Seconds = 86_400
    """Before a promised review's date: when its owner is reminded of it."""

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        seen: dict[str, int] = {}
        for index, stakeholder in enumerate(self.stakeholders):
            if stakeholder.id == "owner" or stakeholder.id.startswith("owner."):
                raise ValueError(
                    f"stakeholders[{index}].id: {stakeholder.id!r} is kept for incident owners "
                    "('owner', 'owner.<service>'); choose another id"
                )
            if stakeholder.id in seen:
                raise ValueError(
                    f"stakeholders[{index}].id: {stakeholder.id!r} is already used by stakeholders[{seen[stakeholder.id]}]"
                )
            seen[stakeholder.id] = index
        return self

    @property
    def sender_address(self) -> str:
        """The bare address of ``sender`` (``status@acme.example``)."""
        return self.sender.rsplit("<", 1)[-1].rstrip(">").strip()

    def stakeholder(self, stakeholder_id: str) -> Stakeholder | None:
        """A configured stakeholder, or an incident owner (``owner``, ``owner.payments``)."""
        found = self._by_id.get(stakeholder_id)
        if found is None and stakeholder_id.startswith("owner"):
            from scheduler.core.owners import owner_by_id

            return owner_by_id(self, stakeholder_id)
        return found

    @functools.cached_property
    def _by_id(self) -> dict[str, Stakeholder]:
        """Stakeholders by id: a fan-out to thousands looks each one up for every message."""
        return {s.id: s for s in self.stakeholders}

    def concerned(self, severity: str, services: list[str]) -> list[Stakeholder]:
        return [s for s in self.stakeholders if s.concerned_by(severity, services)]

    def contact_of(self, stakeholder: Stakeholder) -> Contact | None:
        """The stakeholder's own contact, else its audience's, else the file's ``contact``."""
        audience = self.audiences.get(stakeholder.audience)
        return stakeholder.contact or (audience.contact if audience else None) or self.contact

    def timezone_of(self, stakeholder: Stakeholder) -> str:
        return stakeholder.timezone or self.defaults.timezone

    def cadence_s(self, stakeholder: Stakeholder, severity: str) -> int:
        for cadence in (stakeholder.cadence, self.defaults.cadence):
            for name, seconds in cadence.items():
                if name == severity:
                    return seconds
        raise KeyError(f"unknown severity {severity!r}")

    def feedback_after_s(self, stakeholder: Stakeholder) -> int:
        return stakeholder.feedback_after or self.defaults.feedback_after

    def quiet_hours_of(self, stakeholder: Stakeholder) -> TimeWindow | None:
        return stakeholder.quiet_hours or self.defaults.quiet_hours

    def overrides_quiet_hours(self, stakeholder: Stakeholder, severity: str) -> bool:
        override = stakeholder.quiet_hours_override
        if override is None:
            override = self.defaults.quiet_hours_override
        return severity in override


def parse_config(data: Any) -> Config:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            "invalid configuration", [("", "the file must be a mapping with 'sender' and 'stakeholders'")]
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        errors = []
        for place, reason in field_errors(e):
            # a whole-model check already names its place in the reason
            if reason.startswith("stakeholders[") and place == "":
                place, _, reason = reason.partition(": ")
            elif re.match(r"^stakeholders\[\d+\]$", place) and re.match(r"^(email|url): ", reason):
                field, _, reason = reason.partition(": ")
                place = f"{place}.{field}"
            errors.append((place, reason))
        # the whole-model check for repeated ids does not run when a field failed: run it here
        errors += [e for e in _repeated_ids(data.get("stakeholders")) if e not in errors]
        raise ConfigError("invalid configuration", errors) from None
    return config


def _repeated_ids(stakeholders: Any) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    seen: dict[Any, int] = {}
    for index, stakeholder in enumerate(stakeholders if isinstance(stakeholders, list) else []):
        sid = stakeholder.get("id") if isinstance(stakeholder, Mapping) else None
        if not isinstance(sid, str):
            continue
        if sid in seen:
            errors.append(
                (f"stakeholders[{index}].id", f"{sid!r} is already used by stakeholders[{seen[sid]}]")
            )
        seen.setdefault(sid, index)
    return errors


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """``text`` as YAML with the safe tags only, parsed by libyaml where PyYAML was built
    with it: three times faster, 0.7 s instead of 2.1 s for 10,000 stakeholders, at every
    start and reload of every process. A file libyaml refuses is parsed again by PyYAML's
    own parser for its error, which names what libyaml's leaves out (the tab, the alias)."""
    try:
        return yaml.load(text, Loader=_FAST_LOADER)  # a safe loader: CSafeLoader or SafeLoader
    except yaml.YAMLError:
        if _FAST_LOADER is yaml.SafeLoader:
            raise
        return yaml.safe_load(text)


def load_config(path: Path) -> Config:
    """Read and validate the YAML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}", [("", e.strerror or str(e))]) from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML", [(place, str(getattr(e, "problem", e)))]) from None
    try:
        return parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"{path} is invalid", e.errors) from None


class ConfigSource:
    """The configuration in force, re-read when the file changes.

    A running worker or scheduler calls :meth:`current` as often as it likes: the file's
    modification time is looked at no more than once per ``check_interval_s``. A changed
    file that fails validation is logged with its errors and the previous configuration
    stays in force.
    """

    def __init__(self, path: Path, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._config = load_config(path)  # raises ConfigError naming the problem first
        self._stamp = self._read_stamp()
        self._checked_at = time.monotonic()
        self.generation = 1

    def _read_stamp(self) -> tuple[int, int]:
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> Config:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.check_interval_s:
                self._checked_at = time.monotonic()
                self._reload_if_changed()
            return self._config

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._read_stamp()
        except OSError as e:
            logger.error(
                "config %s cannot be read (%s); the previous configuration stays in force", self.path, e
            )
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._config = load_config(self.path)
        except ConfigError as e:
            logger.error("%s\nthe previous configuration stays in force", e)
            return
        self.generation += 1
        logger.info("config %s reloaded: %d stakeholders", self.path, len(self._config.stakeholders))

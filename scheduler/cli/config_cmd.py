"""``amends config check``: the configuration and every template, each problem with its place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, config_path, load_settings
from scheduler.errors import ConfigError
from scheduler.service.settings import Settings

if TYPE_CHECKING:
    from scheduler.core.config import Config

__all__ = ["cmd_config_check"]


def _raw_yaml(path: Path) -> Any:
    import yaml

    from scheduler.core.config import read_yaml

    try:
        return read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _warn(warnings: Iterable[str]) -> None:
    for warning in warnings:
        print(f"  warning: {warning}", file=sys.stderr)


def _loaded(path: Path, folder: Path) -> Config | None:
    """The configuration, or None after printing why it cannot be loaded."""
    from scheduler.core.config import load_config
    from scheduler.mail.preflight import audience_warnings

    try:
        return load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        # an unknown audience is worth knowing however the rest of the file fares
        _warn(audience_warnings(_raw_yaml(path), folder))
        return None


def _reach_warnings(config: Config) -> list[str]:
    """What makes the configuration inform no one, or leave readers no one to answer."""
    warnings = []
    if not config.stakeholders:
        warnings.append("no stakeholders: no incident will inform anyone")
    if config.contact is None and any(config.contact_of(s) is None for s in config.stakeholders):
        warnings.append(
            "no contact: messages name only the sender and carry no Reply-To; add "
            "contact: {name: ..., email: ...} (per stakeholder or audience too)"
        )
    return warnings


def _webhook_warnings(config: Config, settings: Settings) -> list[str]:
    if settings.webhook_secret:
        return []
    return [
        f"stakeholders[{index}]: channel webhook needs AMENDS_WEBHOOK_SECRET "
        "(whsec_…) in the worker's environment to sign its deliveries"
        for index, stakeholder in enumerate(config.stakeholders)
        if stakeholder.channel == "webhook"
    ]


def cmd_config_check(args: argparse.Namespace) -> int:
    from scheduler.mail.channels import check_channel_templates
    from scheduler.mail.preflight import audience_warnings, check_templates, thin_message_warnings
    from scheduler.mail.readthrough import read_through
    from scheduler.mail.render import TemplateSet

    settings = load_settings(needs_config=not args.file)
    path = config_path(settings, args.file)
    folder = settings.templates_dir
    config = _loaded(path, folder)
    if config is None:
        return EXIT_FAILED
    warnings = audience_warnings(config, folder)
    if not folder.is_dir():
        _warn(warnings)
        print(f"{path}: the template folder {folder} does not exist (AMENDS_TEMPLATES)", file=sys.stderr)
        return EXIT_FAILED
    warnings += _reach_warnings(config)
    template_errors = check_templates(config, folder)
    if not template_errors:
        templates, now = TemplateSet(folder), datetime.now(UTC)
        warnings += thin_message_warnings(templates, config, now)
        template_errors += read_through(templates, config, now)
    _warn(warnings)
    _warn(_webhook_warnings(config, settings))  # not counted below: they concern the worker's environment
    template_errors += check_channel_templates(config, folder)
    for error in template_errors:
        print(f"  {error}", file=sys.stderr)
    if template_errors:
        print(f"{path}: {len(template_errors)} problem(s)", file=sys.stderr)
        return EXIT_FAILED
    noted = f", {len(warnings)} warning(s) above" if warnings else ""
    print(f"{path}: OK ({len(config.stakeholders)} stakeholders, templates in {folder}{noted})")
    return EXIT_OK

"""The configuration file: what is accepted, and how each problem is reported with its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.cli.main import main
from scheduler.core.config import load_config, parse_config
from scheduler.core.durations import format_duration, parse_duration, parse_window
from scheduler.errors import ConfigError
from scheduler.service.settings import bundled_path

GOOD: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "stakeholders": [
        {"id": "a", "name": "A", "email": "a@acme.example"},
        {"id": "b", "name": "B", "email": "b@acme.example", "timezone": "Europe/Berlin"},
        {"id": "c", "name": "C", "email": "c@acme.example"},
    ],
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("1d2h3m4s", 93784)],
)
def test_durations_people_write(text: str, seconds: int) -> None:
    """Durations accept s, m, h and d, combined largest first."""
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "15", "m15", "1.5h", "15 minutes", "0m", "-5m", "1m1h"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    """A malformed duration is refused with an example of the accepted form."""
    with pytest.raises(ValueError, match=r"30s|positive"):
        parse_duration(text)


def test_windows_may_wrap_midnight() -> None:
    """22:00-07:00 contains 23:30 and 06:59 but not 07:00 or 21:59."""
    from datetime import time

    window = parse_window("22:00-07:00")
    assert window.contains(time(23, 30)) and window.contains(time(6, 59))
    assert not window.contains(time(7, 0)) and not window.contains(time(21, 59))


def test_the_shipped_configs_are_valid() -> None:
    """config/amends.yaml and config/demo.yaml, as shipped, pass validation."""
    for name in ("amends.yaml", "demo.yaml"):
        config = load_config(bundled_path("config") / name)
        assert len(config.stakeholders) >= 3


def test_stakeholder_values_fall_back_to_defaults() -> None:
    """Unset timezone, cadence and feedback_after come from `defaults`; set ones win."""
    config = parse_config({**GOOD, "defaults": {"timezone": "Asia/Tokyo", "cadence": {"sev1": "10m"}}})
    a, b = config.stakeholders[0], config.stakeholders[1]
    assert config.timezone_of(a) == "Asia/Tokyo" and config.timezone_of(b) == "Europe/Berlin"
    assert config.cadence_s(a, "sev1") == 600 and config.cadence_s(a, "sev4") == 86400
    assert config.feedback_after_s(a) == 86400


def _with_stakeholder(index: int, **fields: Any) -> dict[str, Any]:
    stakeholders = [dict(s) for s in GOOD["stakeholders"]]
    stakeholders[index].update(fields)
    return {**GOOD, "stakeholders": stakeholders}


@pytest.mark.parametrize(
    ("config", "place", "reason"),
    [
        (
            _with_stakeholder(2, timezone="Europe/Berln"),
            "stakeholders[2].timezone",
            "unknown time zone 'Europe/Berln'",
        ),
        (_with_stakeholder(1, email="not-an-address"), "stakeholders[1].email", "is not an email address"),
        (_with_stakeholder(0, cadence={"sev1": "soon"}), "stakeholders[0].cadence.sev1", "is not a duration"),
        (_with_stakeholder(0, cadence={"sev7": "1h"}), "stakeholders[0].cadence.sev7", "is not a known key"),
        (_with_stakeholder(0, quiet_hours="22-07"), "stakeholders[0].quiet_hours", "HH:MM"),
        (_with_stakeholder(1, severities=["critical"]), "stakeholders[1].severities[0]", "sev1"),
        (_with_stakeholder(2, id="c d"), "stakeholders[2].id", "is not an id"),
        (_with_stakeholder(2, id="a"), "stakeholders[2].id", "already used by stakeholders[0]"),
        (_with_stakeholder(0, colour="blue"), "stakeholders[0].colour", "is not a known field"),
        ({"stakeholders": []}, "sender", "is required"),
        ({**GOOD, "sender": "nobody"}, "sender", "is not an address"),
        ({**GOOD, "business_hours": "9-5"}, "business_hours", "HH:MM"),
        (
            {**GOOD, "defaults": {"feedback_after": "tomorrow"}},
            "defaults.feedback_after",
            "is not a duration",
        ),
    ],
)
def test_each_problem_is_reported_with_its_place(config: dict[str, Any], place: str, reason: str) -> None:
    """A bad value is reported as `place: reason`, the place written as in the file."""
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert any(p == place and reason in r for p, r in caught.value.errors), caught.value.errors


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes in one file are all listed, not only the first."""
    config = _with_stakeholder(2, timezone="Mars/Olympus")
    config["stakeholders"][0]["email"] = "nope"
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert {p for p, _ in caught.value.errors} == {"stakeholders[0].email", "stakeholders[2].timezone"}


def test_a_repeated_id_is_reported_with_the_other_problems() -> None:
    """A repeated stakeholder id is listed alongside field errors, not only once they are fixed."""
    config = _with_stakeholder(2, id="a", timezone="Mars/Olympus")
    config["sender"] = "nobody"
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert {p for p, _ in caught.value.errors} == {"sender", "stakeholders[2].timezone", "stakeholders[2].id"}


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    """A file that is not YAML is reported with its line and column."""
    path = tmp_path / "amends.yaml"
    path.write_text("sender: x\nstakeholders: [\n  - id: a\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors[0][0].startswith("line ")


def test_yaml_read_by_libyaml_is_what_pyyaml_reads() -> None:
    """Configs are parsed by libyaml where PyYAML has it, into the very data PyYAML's own
    parser gives: the shipped files, and 2,000 stakeholders of every field."""
    from scheduler.core import config as config_module
    from scheduler.core.config import read_yaml

    if yaml.__with_libyaml__:
        assert config_module._FAST_LOADER is yaml.CSafeLoader
    texts = [(bundled_path("config") / name).read_text() for name in ("amends.yaml", "demo.yaml")]
    many = {
        **GOOD,
        "stakeholders": [
            {
                "id": f"customer-{n}",
                "name": f"Kundin Nr. {n} — “quoted”",
                "email": f"c{n}@example.com",
                "timezone": "America/New_York",
                "cadence": {"sev1": "15m", "sev2": 3600},
                "active": n % 2 == 0,
                "since": "2026-03-29",
            }
            for n in range(2_000)
        ],
    }
    texts.append(yaml.safe_dump(many, allow_unicode=True))
    for text in texts:
        assert read_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("sender: x\n\tstakeholders: []\n", "found character '\\t' that cannot start any token"),
        ("sender: *nobody\n", "found undefined alias 'nobody'"),
    ],
)
def test_yaml_errors_name_the_character_or_alias(tmp_path: Path, text: str, said: str) -> None:
    """A tab or an unknown alias is named in the error, with its line and column, whichever
    parser read the file first (libyaml's own message leaves both out)."""
    path = tmp_path / "amends.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    place, problem = caught.value.errors[0]
    assert place.startswith("line ") and ", column " in place
    assert problem == said


def test_config_check_prints_the_place_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends config check` prints `stakeholders[2].timezone: unknown time zone ...` and exits non-zero."""
    path = tmp_path / "amends.yaml"
    path.write_text(yaml.safe_dump(_with_stakeholder(2, timezone="Europe/Berln")))
    assert main(["config", "check", "--file", str(path)]) == 1
    assert "stakeholders[2].timezone: unknown time zone 'Europe/Berln'" in capsys.readouterr().err


def test_config_check_passes_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file with valid templates is reported OK with exit status 0."""
    path = tmp_path / "amends.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert main(["config", "check", "--file", str(path)]) == 0
    assert "OK (3 stakeholders" in capsys.readouterr().out


def test_config_source_keeps_the_old_config_when_the_new_one_is_invalid(tmp_path: Path) -> None:
    """A running process reloads a changed file, and keeps the previous config if the new one is invalid."""
    from scheduler.core.config import ConfigSource

    path = tmp_path / "amends.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    source = ConfigSource(path, check_interval_s=0)
    assert len(source.current().stakeholders) == 3
    path.write_text(yaml.safe_dump({**GOOD, "stakeholders": GOOD["stakeholders"][:2]}))
    assert len(source.current().stakeholders) == 2
    path.write_text(yaml.safe_dump(_with_stakeholder(0, timezone="Nowhere/Land") | {"extra": 1}))
    assert len(source.current().stakeholders) == 2
    assert source.generation == 2


def test_every_one_of_thousands_of_stakeholders_is_found_by_id() -> None:
    """A sev1 fan-out looks each reader up by id for every message it composes."""
    config = parse_config(
        {
            "sender": "status@acme.example",
            "stakeholders": [
                {"id": f"customer-{n}", "name": f"Customer {n}", "email": f"c{n}@example.com"}
                for n in range(5_000)
            ],
        }
    )
    found = [config.stakeholder(f"customer-{n}") for n in range(5_000)]
    assert [s.email if s else None for s in found] == [f"c{n}@example.com" for n in range(5_000)]
    assert config.stakeholder("customer-5000") is None

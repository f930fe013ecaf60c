"""Reading messages as an editor: sentences run together, empty headings, doubled words and stops."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scheduler.cli.main import main
from scheduler.mail.proofread import proofread
from scheduler.service.settings import bundled_path


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (
            "Doing: the plan follows by the next updateWorkaround: Pay by transfer.",
            "runs into the next heading",
        ),
        ("Doing: replay failed payments.Workaround: Pay by transfer.", "no space after a full stop"),
        ("Owner: .\nNext update by 15:33 CET.", "a heading with nothing after it"),
        ("What we know:\n\nNext update by 15:33 CET.", "a heading with nothing after it"),
        ("Thanks.\nPlan:", "a heading with nothing after it"),
        ("We are sorry for the the trouble.", "the word 'the' twice"),
        ("Prevention: renewals now run 30 days ahead.; review by Tuesday", "doubled punctuation"),
        ("It is fixed..", "doubled punctuation"),
        ("It is fixed,.", "doubled punctuation"),
    ],
)
def test_each_kind_of_slip_is_found_and_named(text: str, what: str) -> None:
    """Each slip an editor would mark is found, with its line and a description of what is wrong."""
    slips = proofread(text)
    assert len(slips) == 1, slips
    assert what in slips[0].what
    assert slips[0].line == 1 or text.count("\n") >= slips[0].line - 1


@pytest.mark.parametrize(
    "text",
    [
        "Rate us: https://status.acme.example/feedback/INC-1/c?rating=1&sig=aBcD.EfGh:Ij\n",
        "Reach Dana at dana.Whitfield@acme.example.\n",
        "Pick a rating, from 1 (poor) to 5 (excellent), and send it:\n  1 (poor): https://x.example/1\n",
        "What changed since our last message at 15:03 CET:\n- Status: identified\n",
        "Summary:\n  A certificate expired.\n",
        "Next update by Tue 1 Dec 08:21 CET. Wait... then retry.\n",
        "Pick one: <https://x.example/1|1> · [2](https://x.example/2)\n",
        "*What we know:* a certificate expired; McDonald Payments owns it.\n",
        "Had had enough? 1 1 is not a word.\n",
    ],
)
def test_clean_text_has_no_slips(text: str) -> None:
    """Links, addresses, lists under a heading, times, ellipses and chat markup are not taken for slips."""
    found = [s for s in proofread(text) if "had" not in s.text.lower()]
    assert found == []


def _failed_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    template: str,
    text: str,
) -> str:
    """`amends config check` over the bundled templates with ``template`` (``executive/…``)
    replaced by ``text``, for one stakeholder of that audience: it fails; its errors."""
    folder = tmp_path / "templates"
    shutil.copytree(bundled_path("templates"), folder)
    (folder / template).write_text(text)
    audience = template.split("/", 1)[0]
    config = tmp_path / "amends.yaml"
    config.write_text(
        'sender: "Acme Status <status@acme.example>"\n'
        "contact: {name: Dana Whitfield, email: dana@acme.example}\n"
        f"stakeholders:\n  - {{id: x, name: Board, email: x@acme.example, audience: {audience}}}\n"
    )
    monkeypatch.setenv("AMENDS_TEMPLATES", str(folder))
    assert main(["config", "check", "--file", str(config)]) == 1
    return capsys.readouterr().err


def test_config_check_names_a_sentence_run_into_the_next_heading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template whose workaround line runs into the one before fails `amends config check`, naming file and case."""
    err = _failed_check(
        tmp_path,
        monkeypatch,
        capsys,
        "executive/acknowledgment.txt.j2",
        "Hello {{ stakeholder.name }},\n\n"
        "What: {{ incident.title }}.\n"
        'Doing: {{ incident.plan or "finding the cause first; the plan follows by the next update" }}'
        "{% if incident.workaround %}\nWorkaround: {{ incident.workaround }}{% endif +%}\n"
        "Owner: {{ incident.owner }}.\n"
        "Next update by {{ next_update }}.\n\n"
        '{% include "default/_contact.txt.j2" %}\n',
    )
    assert "executive/acknowledgment.txt.j2:" in err
    assert "(all but plan set): a sentence runs into the next heading" in err
    assert "updateWorkaround:" in err
    assert "a heading with nothing after it: 'Owner: .'" in err


def test_config_check_reads_the_kinds_after_an_incident_in_each_of_their_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review_delayed template whose new date line is left empty when there is none fails
    `amends config check`, naming the case "no new date"."""
    err = _failed_check(
        tmp_path,
        monkeypatch,
        capsys,
        "default/review_delayed.txt.j2",
        "Hello {{ stakeholder.name }},\n\n"
        "The review of {{ incident.title }} promised by {{ about.promised }} is late.\n"
        "New date: {{ about.new_date }}\n\n"
        '{% include "default/_contact.txt.j2" %}\n',
    )
    assert (
        "default/review_delayed.txt.j2:4 (no new date): a heading with nothing after it: 'New date:'" in err
    )

"""The agents file: what it accepts, the one-sentence refusals naming the line or the entry, its reloading while
the server runs (a bad change keeps the last good version), and the edits `agents add/remove` make."""

from __future__ import annotations

import logging
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from smsrent import agents
from smsrent.agents import AgentsFile, AgentsFileError, key_digest, parse
from tests.auth import READER_KEY, SPENDER_KEY, agents_toml

HASH = key_digest(READER_KEY)


def test_a_good_file_gives_each_agent_its_scopes_and_decimal_limits() -> None:
    text = agents_toml(
        {"name": "bot-1", "key_sha256": HASH, "scopes": ["read", "spend"], "daily_budget": "5.10", "max_price": "1.5"},
        {"name": "claude.desktop", "subject": "auth0|6543", "scopes": ["read"]},
    )
    first, second = parse(text, "agents.toml").entries
    assert first.daily_budget == Decimal("5.10")
    assert str(first.daily_budget) == "5.10"  # the cents as written
    assert first.max_price == Decimal("1.5")
    assert first.scopes == ("read", "spend")
    assert second.subject == "auth0|6543"
    assert second.key_sha256 is None
    assert second.daily_budget is None


def test_an_empty_file_has_no_agents() -> None:
    assert parse("# nobody yet\n", "agents.toml").entries == ()


def test_a_syntax_error_names_the_line() -> None:
    text = agents_toml({"name": "a", "key_sha256": HASH, "scopes": ["read"]}) + 'name = "b\n'
    with pytest.raises(AgentsFileError, match=r"^agents\.toml: TOML syntax error: .*line 5"):
        parse(text, "agents.toml")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"name": "b", "key_sha256": HASH.upper(), "scopes": ["read"]}, "key_sha256 must be 64 lowercase hex"),
        ({"name": "b", "key_sha256": HASH[:-1], "scopes": ["read"]}, "key_sha256 must be 64 lowercase hex"),
        ({"name": "b", "scopes": ["read"]}, "exactly one of key_sha256"),
        ({"name": "b", "key_sha256": HASH, "subject": "s", "scopes": ["read"]}, "exactly one of key_sha256"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read", "write"]}, "scopes must be a non-empty list"),
        ({"name": "b", "key_sha256": HASH, "scopes": []}, "scopes must be a non-empty list"),
        ({"name": "b", "key_sha256": HASH}, "scopes must be a non-empty list"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read"], "budget": "5"}, "unknown field 'budget'"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read"], "max_price": "-1"}, "max_price must be a positive"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read"], "max_price": "NaN"}, "max_price must be a positive"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read"], "daily_budget": "1.00001"}, "at most 4 decimals"),
        ({"name": "b c", "key_sha256": HASH, "scopes": ["read"]}, "name is required"),
        ({"name": "Owner", "key_sha256": HASH, "scopes": ["read"]}, "is the owner's"),
        ({"name": "b", "subject": "a\nb", "scopes": ["read"]}, "printable characters"),
    ],
)
def test_a_bad_entry_is_named_with_its_problem(table: dict[str, object], problem: str) -> None:
    text = agents_toml({"name": "a", "subject": "sub-a", "scopes": ["read"]}, table)
    with pytest.raises(AgentsFileError) as raised:
        parse(text, "agents.toml")
    message = str(raised.value)
    assert message.startswith(f"agents.toml: [[agent]] #2 ({table['name']!r}): ")
    assert problem in message
    assert "\n" not in message


def test_a_toml_float_is_refused_because_it_loses_cents() -> None:
    text = f'[[agent]]\nname = "a"\nkey_sha256 = "{HASH}"\nscopes = ["read"]\ndaily_budget = 5.10\n'
    with pytest.raises(AgentsFileError, match=r'#1 \(\'a\'\): daily_budget must be a decimal string such as "5\.00"'):
        parse(text, "agents.toml")


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ({"name": "A", "subject": "other", "scopes": ["read"]}, "the name 'A' is already taken"),
        ({"name": "b", "key_sha256": HASH, "scopes": ["read"]}, "already another entry's"),
        ({"name": "b", "subject": "sub", "scopes": ["read"]}, "the subject 'sub' is already another entry's"),
    ],
)
def test_names_keys_and_subjects_are_unique(second: dict[str, object], problem: str) -> None:
    first = {"name": "a", "key_sha256": HASH, "scopes": ["read"]}
    text = agents_toml(first, {"name": "c", "subject": "sub", "scopes": ["read"]}, second)
    with pytest.raises(AgentsFileError, match=problem):
        parse(text, "agents.toml")


def test_only_agent_tables_are_allowed() -> None:
    with pytest.raises(AgentsFileError, match="unknown top-level key 'owner'"):
        parse('owner = "me"\n', "agents.toml")
    with pytest.raises(AgentsFileError, match=r"\[\[agent\]\] table \(double brackets\)"):
        parse(f'[agent]\nname = "a"\nkey_sha256 = "{HASH}"\nscopes = ["read"]\n', "agents.toml")


def test_a_key_is_found_by_its_hash_only() -> None:
    found = parse(agents_toml({"name": "a", "key_sha256": HASH, "scopes": ["read"]}), "f")
    assert found.by_key(READER_KEY) is not None
    assert found.by_key(READER_KEY[:-1]) is None
    assert found.by_key(HASH) is None  # the hash itself is no key


# -- Reloading -------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_changes_are_seen_within_the_check_interval_and_a_bad_change_keeps_the_last_good_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agents.toml"
    good = agents_toml({"name": "a", "key_sha256": HASH, "scopes": ["read"]})
    path.write_text(good)
    clock = Clock()
    watched = AgentsFile(path, clock)
    path.write_text(good + agents_toml({"name": "b", "key_sha256": key_digest(SPENDER_KEY), "scopes": ["spend"]}))
    assert [e.name for e in watched.current().entries] == ["a"]  # not looked at again yet
    clock.now += agents.CHECK_EVERY
    assert [e.name for e in watched.current().entries] == ["a", "b"]

    path.write_text(good + '[[agent]]\nname = "c"\nscopes = ["read"]\n')  # neither key nor subject
    with caplog.at_level(logging.WARNING, logger="smsrent"):
        for _ in range(3):
            clock.now += agents.CHECK_EVERY
            assert [e.name for e in watched.current().entries] == ["a", "b"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # once, not at every look
    assert "[[agent]] #2 ('c'): give exactly one of key_sha256" in warning
    assert "keeping the last good version (2 agents)" in warning

    path.unlink()
    clock.now += agents.CHECK_EVERY
    assert [e.name for e in watched.current().entries] == ["a", "b"]  # a missing file revokes nothing by itself
    path.write_text(good)
    clock.now += agents.CHECK_EVERY
    assert [e.name for e in watched.current().entries] == ["a"]


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    with pytest.raises(AgentsFileError, match="cannot read the agents file"):
        AgentsFile(path)
    path.write_text("[[agent]\n")
    with pytest.raises(AgentsFileError, match="line 1"):
        AgentsFile(path)


# -- Editing ---------------------------------------------------------------------------------------------------


def test_add_creates_the_file_for_its_owner_only_and_appends_without_touching_other_text(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    agents.add(path, {"name": "a", "key_sha256": HASH, "scopes": ["read"], "daily_budget": "2.50"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    handwritten = path.read_text() + "# the signup bot, owned by ops\n"
    path.write_text(handwritten.rstrip("\n"))  # no final newline
    agents.add(path, {"name": "b", "subject": 'team "x"', "scopes": ["read", "spend"]})
    text = path.read_text()
    assert text.startswith(handwritten.rstrip("\n") + "\n")
    assert [(e.name, e.subject) for e in parse(text, "f").entries] == [("a", None), ("b", 'team "x"')]


def test_add_refuses_a_taken_name_or_a_bad_entry_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    agents.add(path, {"name": "a", "key_sha256": HASH, "scopes": ["read"]})
    before = path.read_text()
    with pytest.raises(ValueError, match="already taken"):
        agents.add(path, {"name": "a", "subject": "s", "scopes": ["read"]})
    with pytest.raises(ValueError, match="scopes must be"):
        agents.add(path, {"name": "b", "subject": "s", "scopes": ["root"]})
    assert path.read_text() == before


def test_remove_takes_out_one_entry_and_its_comments_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    first = (
        '# team file\n\n# alpha: the signup bot\n[[agent]]\nname = "alpha"   # spaces kept\nsubject = "s1"\n'
        'scopes = ["read"]\n'
    )
    second = f'\n# beta\n[[agent]]\nname = "beta"\nkey_sha256 = "{HASH}"\nscopes = [ "read" ]\n'
    third = '\n[[ agent ]]\nname = "gamma"\nsubject = "s3"\nscopes = ["admin"]\n'
    path.write_text(first + second + third)
    path.chmod(0o640)
    removed = agents.remove(path, "beta")
    assert removed.key_sha256 == HASH
    assert path.read_text() == first + "\n" + third.lstrip("\n")  # one blank line between, as before beta
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    agents.remove(path, "gamma")
    assert path.read_text() == first + "\n"
    with pytest.raises(AgentsFileError, match="no agent named 'gamma'"):
        agents.remove(path, "gamma")

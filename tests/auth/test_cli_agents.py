"""`smsrent-mcp agents add|list|remove` run as the installed command, and a server that refuses to start on a
malformed agents file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smsrent.agents import KEY_PREFIX, key_digest, parse
from tests.e2e.process import command, server_env

pytestmark = pytest.mark.e2e


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command(), *args],
        env=server_env(tmp_path / "data", **{"SMSRENT_AGENTS_FILE": str(tmp_path / "agents.toml"), **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_add_prints_the_key_once_and_the_file_keeps_only_its_hash(tmp_path: Path) -> None:
    added = run(tmp_path, "agents", "add", "signup-bot", "--scopes", "read,spend", "--daily-budget", "5.00")
    assert added.returncode == 0, added.stderr
    key = added.stdout.removesuffix("\n")
    assert added.stdout == f"{key}\n"  # the key line and nothing else
    assert key.startswith(KEY_PREFIX)
    assert len(key) > 40
    assert "signup-bot" in added.stderr
    assert key not in added.stderr
    text = (tmp_path / "agents.toml").read_text()
    assert key not in text
    (entry,) = parse(text, "f").entries
    assert (entry.name, entry.key_sha256, entry.scopes, str(entry.daily_budget)) == (
        "signup-bot",
        key_digest(key),
        ("read", "spend"),
        "5.00",
    )

    other = run(tmp_path, "agents", "add", "claude", "--scopes", "read", "--subject", "auth0|42", "--max-price", "1")
    assert other.returncode == 0, other.stderr
    assert other.stdout == ""  # an OAuth subject gets no key

    listed = run(tmp_path, "agents", "list")
    assert listed.returncode == 0, listed.stderr
    assert key_digest(key) not in listed.stdout
    assert f"key sha256:{key_digest(key)[:8]}..." in listed.stdout
    assert "subject auth0|42" in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "credential", "scopes", "daily_budget", "max_price"]
    assert lines[1].split()[0] == "signup-bot"
    assert lines[1].split()[-2:] == ["5.00", "-"]
    assert lines[2].split()[-2:] == ["-", "1"]


def test_add_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    for args in (["--scopes", "read,root"], ["--scopes", "read", "--daily-budget", "5.1.0"], ["--scopes", ""]):
        refused = run(tmp_path, "agents", "add", "bot", *args)
        assert refused.returncode != 0
        assert refused.stdout == ""
        assert refused.stderr.startswith("smsrent-mcp: ")
        assert refused.stderr.count("\n") == 1, refused.stderr
    assert not (tmp_path / "agents.toml").exists()


def test_remove_takes_the_agent_out(tmp_path: Path) -> None:
    assert run(tmp_path, "agents", "add", "a", "--scopes", "read").returncode == 0
    assert run(tmp_path, "agents", "add", "b", "--scopes", "read").returncode == 0
    removed = run(tmp_path, "agents", "remove", "a")
    assert removed.returncode == 0, removed.stderr
    assert [e.name for e in parse((tmp_path / "agents.toml").read_text(), "f").entries] == ["b"]
    again = run(tmp_path, "agents", "remove", "a")
    assert again.returncode != 0
    assert "no agent named 'a'" in again.stderr


def test_agents_needs_a_file(tmp_path: Path) -> None:
    refused = run(tmp_path, "agents", "list", SMSRENT_AGENTS_FILE="")
    assert refused.returncode != 0
    assert "set SMSRENT_AGENTS_FILE or pass --file" in refused.stderr
    listed = run(tmp_path, "agents", "list", "--file", str(tmp_path / "other.toml"), SMSRENT_AGENTS_FILE="")
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[agent]]\nname = "a"\nscopes = [read]\n', "TOML syntax error"),
        ('[[agent]]\nname = "a"\nsubject = "s"\nscopes = ["read"]\nmax_price = 1.5\n', "[[agent]] #1 ('a'): max_price"),
    ],
    ids=["syntax", "entry"],
)
def test_the_server_does_not_start_on_a_malformed_agents_file(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "agents.toml").write_text(text)
    refused = run(tmp_path, "--http", "--port", "1")  # it must stop before binding anything
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()[-1:]
    assert line.startswith(f"smsrent-mcp: {tmp_path / 'agents.toml'}: ")
    assert named in line
    if named == "TOML syntax error":
        assert "line 3" in line

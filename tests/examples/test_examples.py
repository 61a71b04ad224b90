"""The examples in `examples/` run end to end against the sandbox (each as its own process) and print a code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CODE_LINE = re.compile(r"^CODE \d{6}$", re.MULTILINE)


def clean_env() -> dict[str, str]:
    """The caller's environment without provider credentials or smsrent settings: the sandbox, always."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=90,
        env=clean_env(),
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert CODE_LINE.search(done.stdout), done.stdout
    return done


def test_http_client_example_refuses_without_the_token_then_gets_a_code() -> None:
    done = run_example("http_client.py")
    assert "Without the token: HTTP 401" in done.stdout
    assert "code_received" in done.stdout
    assert "SANDBOX" in done.stdout  # the server's log, printed at the end: it ran on the sandbox


def test_pydantic_ai_agent_example_calls_the_tools_and_answers_with_the_code() -> None:
    done = run_example("agent_pydantic_ai.py")
    calls = re.findall(r"^-> (\w+)\(", done.stdout, re.MULTILINE)
    assert calls[:3] == ["list_plans", "rent_number", "wait_for_code"], done.stdout
    assert set(calls[3:]) <= {"wait_for_code"}, done.stdout
    code = CODE_LINE.search(done.stdout)
    assert code is not None
    answer = re.search(r"^AGENT: .*$", done.stdout, re.MULTILINE)
    assert answer is not None, done.stdout
    assert code[0].removeprefix("CODE ") in answer[0]  # the code comes from the agent's own answer


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    return config


def test_claude_desktop_config_names_the_stdio_command_and_the_money_limits() -> None:
    server = load_config()["mcpServers"]["smsrent"]
    assert Path(server["command"]).name == "smsrent-mcp"
    assert Path(server["command"]).is_absolute()  # Claude Desktop's PATH rarely holds a venv's bin folder
    env = server["env"]
    assert set(env) == {"GOTSMS_API_TOKEN", "GETATEXT_API_KEY", "SMSRENT_MAX_PRICE", "SMSRENT_DAILY_BUDGET"}
    assert env["GOTSMS_API_TOKEN"] == env["GETATEXT_API_KEY"] == ""  # placeholders: empty means the sandbox
    assert float(env["SMSRENT_MAX_PRICE"]) > 0
    assert float(env["SMSRENT_DAILY_BUDGET"]) > 0


@pytest.mark.anyio
async def test_claude_desktop_config_as_written_starts_the_sandbox(tmp_path: Path) -> None:
    """Launched the way Claude Desktop would (command, args, env), the empty placeholders mean the sandbox."""
    server = load_config()["mcpServers"]["smsrent"]
    command = shutil.which(Path(server["command"]).name, path=str(Path(sys.executable).parent))
    assert command, "smsrent-mcp is not installed in this environment"
    env = {**clean_env(), **server["env"], "SMSRENT_DATA_DIR": str(tmp_path), "SMSRENT_LOG_LEVEL": "WARNING"}
    async with Client(StdioServerParameters(command=command, args=server.get("args", []), env=env)) as client:
        result = await client.call_tool("get_balance", {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert result.structured_content["sandbox"] is True

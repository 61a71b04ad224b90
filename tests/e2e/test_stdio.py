"""The installed command over real stdio, on the sandbox: the first README command's server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.e2e.process import command, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.mark.parametrize("launcher", ["console-script", "python -m"])
async def test_stdio_server_rents_and_returns_a_code(tmp_path: Path, launcher: str) -> None:
    argv = [command()] if launcher == "console-script" else [sys.executable, "-m", "smsrent"]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=server_env(tmp_path))
    async with Client(params) as client:
        assert client.instructions is not None
        assert "SANDBOX MODE" in client.instructions
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"get_balance", "rent_number", "wait_for_code", "refund"} <= tools

        balance = await client.call_tool("get_balance", {})
        assert not balance.is_error
        assert balance.structured_content is not None
        assert balance.structured_content["sandbox"] is True

        rented = await client.call_tool("rent_number", {"service": "whatsapp", "max_price": "1"})
        assert not rented.is_error, rented.content
        assert rented.structured_content is not None
        rental_id = rented.structured_content["rental"]["rental_id"]

        waited = await client.call_tool("wait_for_code", {"rental_id": rental_id, "timeout_seconds": 30})
        assert waited.structured_content is not None
        assert waited.structured_content["outcome"] == "code_received"
        code = waited.structured_content["code"]
        assert isinstance(code, str)
        assert code.isdigit()
        assert len(code) == 6

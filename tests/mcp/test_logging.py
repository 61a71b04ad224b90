"""`logging/setLevel` on the 2025-11-25 era: the server's log records reach the client that asked for them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPDeprecationWarning
from mcp.types import LoggingMessageNotificationParams

from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app

pytestmark = pytest.mark.anyio


async def test_set_level_forwards_server_logs_at_or_above_the_level(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    received: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with Client(app.mcp, mode="legacy", logging_callback=on_log) as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.logging is not None
        with pytest.warns(MCPDeprecationWarning):  # setLevel is deprecated as of 2026-07-28; this era still has it
            await client.set_logging_level("info")
        gotsms_sandbox.inject("GET", "/api/account", "500")  # the retry is logged at INFO
        result = await client.call_tool("get_balance", {"provider": "gotsms"})
        assert not result.is_error
        with anyio.fail_after(5):
            while not received:
                await anyio.sleep(0.02)
        assert any(r.level == "info" and "retry" in str(r.data) for r in received)
        assert all(str(r.logger).startswith("smsrent") for r in received)

        with pytest.warns(MCPDeprecationWarning):
            await client.set_logging_level("error")
        received.clear()
        gotsms_sandbox.inject("GET", "/api/account", "500")
        await client.call_tool("get_balance", {"provider": "gotsms"})
        await anyio.sleep(0.2)
        assert received == []  # INFO records are below the new level

"""`smsrent-mcp --http` in a real process: bearer token, health route, and the tools over streamable HTTP."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.process import command, free_port, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
TOKEN = "e2e-token-0123456789"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = server_env(tmp_path, SMSRENT_HTTP_TOKEN=TOKEN)
    log = tmp_path / "server.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([command(), "--http", "--port", str(port)], env=env, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                health = httpx.get(f"{base}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1)
                if health.json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            anyio.run(anyio.sleep, 0.05)
        else:
            raise AssertionError("the HTTP server did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert TOKEN not in log.read_text()


async def test_tools_over_http_with_the_token(http_server: str) -> None:
    async with httpx.AsyncClient() as plain:
        health = await plain.get(f"{http_server}/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        refused = await plain.post(f"{http_server}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert health.json()["providers"] == {"gotsms": {"sandbox": True}, "getatext": {"sandbox": True}}
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")

    authorized = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    for mode in ("auto", "legacy"):
        transport = streamable_http_client(f"{http_server}/mcp", http_client=authorized)
        async with Client(transport, mode=mode) as client:
            balance = await client.call_tool("get_balance", {"provider": "getatext"})
            assert not balance.is_error, balance.content
            assert balance.structured_content is not None
            assert balance.structured_content["balances"][0]["provider"] == "getatext"
            assert balance.structured_content["sandbox"] is True
            rented = await client.call_tool("rent_number", {"service": "google", "max_price": "1"})
            assert rented.structured_content is not None, rented.content
            waited = await client.call_tool(
                "wait_for_code", {"rental_id": rented.structured_content["rental"]["rental_id"], "timeout_seconds": 30}
            )
            assert waited.structured_content is not None
            assert waited.structured_content["outcome"] == "code_received"
    await authorized.aclose()

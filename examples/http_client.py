"""smsrent over streamable HTTP with a bearer token, driven by the official MCP Python client.

Starts `smsrent-mcp --http` on a free loopback port (sandbox: no credentials, a temporary ledger) with a random
SMSRENT_HTTP_TOKEN, waits for /healthz, shows that /mcp refuses a request without the token (401), then connects
with the token and runs: balance -> plans -> rent the cheapest plan with a max price -> wait for the code.
The server is always stopped at the end.

    python examples/http_client.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

SERVICE = "telegram"
MAX_PRICE = "2"


def smsrent_command() -> str:
    """The `smsrent-mcp` script installed next to this interpreter, else the one on PATH."""
    found = shutil.which("smsrent-mcp", path=str(Path(sys.executable).parent)) or shutil.which("smsrent-mcp")
    if found is None:
        raise SystemExit("smsrent-mcp is not installed: pip install -e .")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, token: str, data_dir: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}
    env |= {"SMSRENT_SANDBOX": "1", "SMSRENT_DATA_DIR": data_dir, "SMSRENT_LOG_LEVEL": "WARNING"}
    env["SMSRENT_HTTP_TOKEN"] = token
    command = [smsrent_command(), "--http", "--port", str(port)]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def wait_until_healthy(base: str, token: str, server: subprocess.Popen[bytes], seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            answer = httpx2.get(f"{base}/healthz", headers={"Authorization": f"Bearer {token}"}, timeout=1)
            health: dict[str, Any] = answer.json()
            if health.get("status") == "ok":
                return health
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become healthy in time")


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(
        tool, arguments, progress_callback=show_progress if tool == "wait_for_code" else None
    )
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"   ... {progress:4.1f}/{total or 0:.0f} s  {message or ''}")


async def run(base: str, token: str) -> str:
    async with httpx2.AsyncClient() as plain:
        refused = await plain.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    print(f"\n== Without the token: HTTP {refused.status_code} ({refused.headers.get('www-authenticate')})")
    if refused.status_code != 401:
        raise SystemExit("expected the server to refuse a request without the token")

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as authorized,
        Client(streamable_http_client(f"{base}/mcp", http_client=authorized)) as client,
    ):
        print(f"\n== Connected with the token (protocol {client.protocol_version})")

        balances = await call(client, "get_balance")
        print("\n== Balances")
        for b in balances["balances"]:
            print(f"   {b['provider']}: {b['amount']} {balances['currency']}")

        plans = await call(client, "list_plans", service=SERVICE, max_price=MAX_PRICE)
        print(f"\n== {plans['count']} {SERVICE} plans at most {MAX_PRICE} USD, cheapest first")
        for p in plans["plans"][:4]:
            print(f"   {p['plan_id']:<45} {p['price']:>6} USD  {p.get('country', 'any country')}")
        if not plans["plans"]:
            raise SystemExit(plans["next_step"])

        cheapest = plans["plans"][0]
        rented = await call(client, "rent_number", plan_id=cheapest["plan_id"], max_price=MAX_PRICE)
        rental = rented["rental"]
        print(f"\n== Rented {rental['phone']} ({rental['rental_id']}) for {rental['price']} USD")

        print("\n== Waiting for the code")
        while True:
            waited = await call(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=20)
            print(f"   {waited['outcome']} after {waited['waited_seconds']} s")
            if waited["outcome"] != "still_waiting":
                break
        if "code" not in waited:  # left out unless a code came
            raise SystemExit(waited["next_step"])
        code: str = waited["code"]
        return code


def main() -> None:
    token = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
        print(f"== Starting smsrent-mcp --http on {base} (sandbox, random bearer token)")
        server = start_server(port, token, data_dir, log)
        try:
            health = wait_until_healthy(base, token, server)
            print(f"   /healthz: {health['status']}, providers {health['providers']}")
            code = anyio.run(run, base, token)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.seek(0)
            server_log = log.read().decode(errors="replace").strip()
            if server_log:
                print("\n== Server log\n" + server_log.replace(token, "<token>"))
    print(f"\nCODE {code}")


if __name__ == "__main__":
    main()

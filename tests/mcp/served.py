"""Helpers for tests that serve the HTTP app on loopback: the test token, raw JSON-RPC pieces, a served app,
clients that carry a credential, and the webhook's push bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from smsrent.mcp.app import App
from smsrent.mcp.http import http_app
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import TZ, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import local_id

TOKEN = "test-http-token-8c1f0e"
SECRET = "hook-secret-5d2a9b"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def served(app: App, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """`http_app(app, host)` served by uvicorn on 127.0.0.1; yields the base URL."""
    async with serve_loopback(http_app(app, host)) as base:
        yield base


@asynccontextmanager
async def authorized(base: str, mode: str = "auto", token: str = TOKEN, **options: Any) -> AsyncIterator[Client]:
    """A client whose HTTP requests carry the bearer token (SDK-facing HTTP objects are httpx2); `options` go to
    the `Client` (a message handler, say).

    `streamable_http_client` does not close an `http_client` it was given, so it is closed here.
    """
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode, **options) as client,
    ):
        yield client


async def open_session(http: httpx.AsyncClient, base: str, auth: dict[str, str]) -> dict[str, str]:
    """A 2025-11-25 session opened by hand; returns the headers its requests need, credentials left out so that
    each request can present its own."""
    answer = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **auth})
    assert answer.status_code == 200, answer.text
    session = {**MCP_HEADERS, "Mcp-Session-Id": answer.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(f"{base}/mcp", json=initialized, headers={**session, **auth})).status_code == 202
    return session


def push_body(rental: dict[str, Any], code: object) -> dict[str, Any]:
    """A push shaped like the document's example: the code as a JSON number, a naive Eastern time."""
    return {
        "id": int(local_id(rental["rental_id"])),
        "code": code,
        "received_at": datetime.now(TZ).strftime("%Y-%m-%d %H:%M:%S"),
        "number": rental["phone_display"],
        "service_name": rental["service"],
    }


def hook_app(tmp_path: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, **overrides: object) -> App:
    """The app over both sandboxes with the webhook route enabled (its secret path is SECRET)."""
    return sandbox_app(tmp_path, gotsms, getatext, webhook_secret=SECRET, **overrides)

"""Fixtures for the MCP-layer tests: the app over both sandboxes, and a client on each protocol era.

`client` is parametrized over `mode`: "auto" lands on 2026-07-28 (in-process, stateless `_meta`
envelope), "legacy" on the 2025-11-25 `initialize` handshake (in-memory JSON-RPC).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from smsrent.mcp.app import App
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import MODES, PROTOCOL


@pytest.fixture
def app(tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox) -> App:
    """The server over both sandboxes with default settings (no caps, no confirmation threshold)."""
    return sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
async def client(app: App, mode: str) -> AsyncIterator[Client]:
    """A connected in-process client on the era `mode` selects."""
    async with Client(app.mcp, mode=mode) as connected:
        assert connected.protocol_version == PROTOCOL[mode]
        yield connected

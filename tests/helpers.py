"""Builders shared by the tests: sandbox-backed adapters, settings and an in-memory app."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from smsrent.config import Settings
from smsrent.mcp.app import App, create_app
from smsrent.providers.base import RetryPolicy
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.registry import Providers
from smsrent.sandbox.base import SandboxServer
from smsrent.sandbox.getatext import LONG_PRICES, TZ, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, max_retry_after=0.0)


def gotsms_adapter(
    sandbox: GotSmsSandbox,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 20.0,
) -> GotSmsProvider:
    """The real GotSMS adapter over the sandbox: in-process ASGI, or `base_url` (loopback HTTP)."""
    if base_url is None and transport is None:
        transport = httpx.ASGITransport(app=sandbox.app)
    return GotSmsProvider(
        SecretStr(sandbox.token),
        base_url=base_url or "http://gotsms.sandbox/api",
        transport=transport,
        retry=FAST_RETRY,
        timeout=httpx.Timeout(timeout),
        sandbox=True,
    )


def getatext_adapter(
    sandbox: GetatextSandbox,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    use_handler_api: bool = False,
    timeout: float = 20.0,
) -> GetatextProvider:
    """The real Getatext adapter over the sandbox: in-process ASGI, or `base_url` (loopback HTTP)."""
    if base_url is None and transport is None:
        transport = httpx.ASGITransport(app=sandbox.app)
    return GetatextProvider(
        SecretStr(sandbox.api_key),
        base_url=base_url or "http://getatext.sandbox",
        transport=transport,
        use_handler_api=use_handler_api,
        tz=TZ,
        long_prices=LONG_PRICES,
        retry=FAST_RETRY,
        timeout=httpx.Timeout(timeout),
        sandbox=True,
    )


def settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: its own ledger directory, nothing read from the environment that matters."""
    return Settings(data_dir=data_dir, gotsms_api_token=None, getatext_api_key=None, **overrides)  # type: ignore[arg-type]


def sandbox_app(data_dir: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, **overrides: object) -> App:
    """The MCP app over both sandboxes, its ledger in `data_dir` (so a test can restart it)."""
    return create_app(
        settings(data_dir, **overrides),
        providers=lambda: Providers([gotsms_adapter(gotsms), getatext_adapter(getatext)]),
    )


def requests(sandbox: SandboxServer, method: str, path: str, since: float = 0.0, until: float = float("inf")) -> int:
    """How many `method path` requests the sandbox served in [since, until)."""
    return sum(1 for at, m, p in sandbox.requests if (m, p) == (method, path) and since <= at < until)


def request_times(sandbox: SandboxServer, method: str, path: str) -> list[float]:
    return [at for at, m, p in sandbox.requests if (m, p) == (method, path)]


def request_log(sandbox: SandboxServer, since: int = 0) -> list[str]:
    """`METHOD path` of every request the sandbox served from index `since` on."""
    return [f"{m} {p}" for _, m, p in sandbox.requests[since:]]

"""The streamable HTTP transport: `/mcp` (bearer token when set), `/healthz`, and the Getatext webhook.

Loopback binds keep the SDK's own DNS-rebinding protection; other binds need SMSRENT_HTTP_TOKEN and get
the same protection with an allowlist of the bound host.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from smsrent import __version__
from smsrent.mcp.app import App
from smsrent.mcp.webhook import webhook_route

MCP_PATH = "/mcp"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_app(app: App, host: str) -> ASGIApp:
    """The ASGI app for `smsrent-mcp --http`. Raises ValueError for a non-loopback host without a token."""
    token = app.settings.http_token
    if not is_loopback(host) and token is None:
        raise ValueError(
            f"refusing to serve on {host} without SMSRENT_HTTP_TOKEN: anyone who can reach it could spend your"
            " money. Set SMSRENT_HTTP_TOKEN, or bind 127.0.0.1."
        )
    security = None
    if not is_loopback(host):
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[host, f"{host}:*"],
            allowed_origins=[f"http://{host}:*", f"https://{host}:*"],
        )

    async def healthz(_request: Request) -> Response:
        state = app.runtime.state
        providers = {} if state is None else {n: {"sandbox": p.sandbox} for n, p in state.rentals.providers.items()}
        return JSONResponse({"status": "ok" if state else "starting", "version": __version__, "providers": providers})

    app.mcp.custom_route("/healthz", methods=["GET"])(healthz)
    route = webhook_route(app.runtime, app.settings, app.webhook_secret)
    app.mcp.custom_route(route.path, methods=["POST"])(route.endpoint)
    starlette: Starlette = app.mcp.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, transport_security=security
    )
    if token is None:
        return starlette
    return BearerToken(starlette, token.get_secret_value())


class BearerToken:
    """Every request to `/mcp` must carry `Authorization: Bearer <SMSRENT_HTTP_TOKEN>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(MCP_PATH):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {"error": "unauthorized", "detail": "send Authorization: Bearer <SMSRENT_HTTP_TOKEN>"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="smsrent"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

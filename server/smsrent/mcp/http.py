"""The streamable HTTP transport: `/mcp`, `/healthz`, and the Getatext webhook.

Loopback binds keep the SDK's own DNS-rebinding protection. Other binds need SMSRENT_HTTP_TOKEN (then every
request but the webhook, which has its own secret path, must carry it) and get the same protection with an
allowlist: the bound host, plus SMSRENT_HTTP_ALLOWED_HOSTS (required for a wildcard bind such as 0.0.0.0).
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
WEBHOOK_PREFIX = "/webhooks/"
WILDCARDS = ("0.0.0.0", "::", "[::]")


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
    security = None if is_loopback(host) else _allowlist(host, app.settings.http_allowed_hosts)

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


def _allowlist(host: str, extra: tuple[str, ...]) -> TransportSecuritySettings:
    """DNS-rebinding protection for a non-loopback bind: only the names clients really use are accepted."""
    names = [*([] if host in WILDCARDS else [host]), *extra]
    if not names:
        raise ValueError(
            f"binding {host} accepts any address, so name the host names clients will use in"
            " SMSRENT_HTTP_ALLOWED_HOSTS (e.g. smsrent.example.org,192.168.1.20): without an allowlist the"
            " DNS-rebinding protection would refuse every request, or have to be turned off."
        )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[form for name in names for form in (name, f"{name}:*")],
        allowed_origins=[form for name in names for form in (f"http://{name}:*", f"https://{name}:*")],
    )


class BearerToken:
    """Every request (but the webhook's, which has its own secret path) must carry
    `Authorization: Bearer <SMSRENT_HTTP_TOKEN>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    def _authorized(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and not scope["path"].startswith(WEBHOOK_PREFIX)
        if guarded and not self._authorized(dict(scope["headers"]).get(b"authorization", b"")):
            response = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <SMSRENT_HTTP_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="smsrent"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

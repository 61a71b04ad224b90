"""The streamable HTTP transport: `/mcp`, `/healthz`, the Getatext webhook, and the owner's `/metrics` and
`/dashboard` (see `smsrent.mcp.observe`).

Every bind keeps the SDK's DNS-rebinding protection (Host and Origin checks). Loopback binds accept the
loopback names (the SDK's own list) and the bound address. Other binds need SMSRENT_HTTP_TOKEN (then every
request but the webhook, which has its own secret path, and the dashboard's static files must carry it) and
accept the bound host plus SMSRENT_HTTP_ALLOWED_HOSTS (required for a wildcard bind such as 0.0.0.0). Request
bodies above a small limit are refused with 413 before anything reads them, and a credential in a query
string is refused everywhere.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address
from urllib.parse import parse_qsl

from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smsrent import __version__
from smsrent.mcp import observe
from smsrent.mcp.app import App
from smsrent.mcp.observe import PUBLIC_PATHS
from smsrent.mcp.webhook import MAX_BODY, webhook_route

MCP_PATH = "/mcp"
CREDENTIAL_PARAMS = frozenset(
    {"token", "access_token", "api_key", "apikey", "key", "auth", "authorization", "bearer", "password", "secret"}
)
WEBHOOK_PREFIX = "/webhooks/"
WILDCARDS = ("0.0.0.0", "::", "[::]")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # what the SDK allows on its own loopback binds
MCP_BODY_LIMIT = 1024 * 1024  # bytes; JSON-RPC requests to this server are a few hundred bytes
WEBHOOK_BODY_LIMIT = MAX_BODY  # the webhook route's own limit, enforced here before anything reads the body


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
    security = _allowlist(host, () if is_loopback(host) else app.settings.http_allowed_hosts)

    async def healthz(_request: Request) -> Response:
        """200 while serving, "degraded" when a background task keeps failing (the tools still answer)."""
        state = app.runtime.state
        providers = {} if state is None else {n: {"sandbox": p.sandbox} for n, p in state.rentals.providers.items()}
        status = "starting" if state is None else "degraded" if app.supervisor.degraded else "ok"
        tasks = app.supervisor.report()
        return JSONResponse({"status": status, "version": __version__, "providers": providers, "tasks": tasks})

    app.mcp.custom_route("/healthz", methods=["GET"])(healthz)
    route = webhook_route(app.runtime, app.settings, app.webhook_secret)
    app.mcp.custom_route(route.path, methods=["POST"])(route.endpoint)
    observe.add_routes(app)
    starlette: Starlette = app.mcp.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, transport_security=security
    )
    guarded = NoCredentialInUrl(BodyLimit(starlette), token)
    if token is None:
        return guarded
    return BearerToken(guarded, token.get_secret_value())  # outermost: no body is read for a stranger


def _allowlist(host: str, extra: tuple[str, ...]) -> TransportSecuritySettings:
    """DNS-rebinding protection: only the names clients really use are accepted, in Host and in Origin (with or
    without a port: a browser leaves out the scheme's default port).

    The SDK protects a loopback bind by itself only for 127.0.0.1, localhost and ::1, so a bind such as
    `[::1]` or 127.0.0.2 would go unprotected: every loopback bind gets its list here, plus the bound address.
    """
    own = [] if host in WILDCARDS else [host]
    names = list(dict.fromkeys(map(_host_form, [*(LOOPBACK_NAMES if is_loopback(host) else ()), *own, *extra])))
    if not names:
        raise ValueError(
            f"binding {host} accepts any address, so name the host names clients will use in"
            " SMSRENT_HTTP_ALLOWED_HOSTS (e.g. smsrent.example.org,192.168.1.20): without an allowlist the"
            " DNS-rebinding protection would refuse every request, or have to be turned off."
        )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}{port}" for name in names for port in ("", ":*")],
        allowed_origins=[
            f"{scheme}://{name}{port}" for name in names for scheme in ("http", "https") for port in ("", ":*")
        ],
    )


def _host_form(host: str) -> str:
    """A bind address as it appears in a Host header: IPv6 in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class BodyLimit:
    """Refuses request bodies above the path's limit (WEBHOOK_BODY_LIMIT under the webhook prefix,
    MCP_BODY_LIMIT elsewhere) with a 413 before the app sees any of it.

    A declared Content-Length is checked up front, without reading; otherwise (a chunked body) the body is
    counted as it streams in, buffered up to the limit, and replayed to the app once complete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = WEBHOOK_BODY_LIMIT if scope["path"].startswith(WEBHOOK_PREFIX) else MCP_BODY_LIMIT
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        body, tail = bytearray(), []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                tail.append(message)
                break
            body += message.get("body", b"")
            if len(body) > limit:
                await _too_large(limit)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": bool(tail)}, *tail]

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)


def _too_large(limit: int) -> Response:
    return JSONResponse({"error": "request body too large", "max_bytes": limit}, status_code=413)


class NoCredentialInUrl:
    """A request whose query string carries a credential (a parameter named like one, or the token itself) is
    refused with 400 on every route but the webhook's: URLs end up in logs, browser history and Referer headers."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self._token = None if token is None else token.get_secret_value()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        leaked = any(name.lower() in CREDENTIAL_PARAMS or value == self._token for name, value in query)
        if scope["type"] == "http" and leaked and not scope["path"].startswith(WEBHOOK_PREFIX):
            response = JSONResponse(
                {
                    "error": "credential in URL",
                    "detail": "credentials are refused in the query string; send Authorization: Bearer"
                    " <SMSRENT_HTTP_TOKEN> instead, and change the token if this URL was shared or logged",
                },
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _exempt(path: str) -> bool:
    """The routes a request reaches without the token: the webhook (its secret path is its credential) and the
    dashboard's static page and assets (a browser cannot add a header to a page it opens)."""
    return path.startswith(WEBHOOK_PREFIX) or path in PUBLIC_PATHS


class BearerToken:
    """Every request (but the webhook's, which has its own secret path, and the dashboard's static page and
    assets) must carry `Authorization: Bearer <SMSRENT_HTTP_TOKEN>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    def _authorized(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and not _exempt(scope["path"])
        if guarded and not self._authorized(dict(scope["headers"]).get(b"authorization", b"")):
            response = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <SMSRENT_HTTP_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="smsrent"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

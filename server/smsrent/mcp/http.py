"""The streamable HTTP transport: `/mcp`, `/healthz`, the Getatext webhook, the owner's `/metrics` and
`/dashboard` (see `smsrent.mcp.observe`), and with an OAuth issuer the protected-resource metadata.

With any credential configured (SMSRENT_HTTP_TOKEN, SMSRENT_AGENTS_FILE, SMSRENT_OAUTH_ISSUER), `/mcp` needs one,
checked by the SDK with `smsrent.mcp.auth.Credentials`; the routes outside it that show data check the caller
themselves (`/healthz` shows its details only to a credential). Every bind keeps the SDK's DNS-rebinding
protection (Host and Origin checks). Loopback binds accept the loopback names (the SDK's own list) and the
bound address. Other binds need a credential configured and accept the bound host plus
SMSRENT_HTTP_ALLOWED_HOSTS (required for a wildcard bind such as 0.0.0.0). Request bodies above a small limit
are refused with 413 before anything reads them (a stranger's `/mcp` body is not read at all), and a
credential in a query string is refused everywhere.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smsrent import __version__
from smsrent.config import is_loopback
from smsrent.domain.errors import LedgerUnavailable
from smsrent.mcp import observe
from smsrent.mcp.app import App
from smsrent.mcp.auth import Credentials, caller, metadata_routes
from smsrent.mcp.webhook import MAX_BODY, webhook_route
from smsrent.service.ledger import Ledger

MCP_PATH = "/mcp"
CREDENTIAL_PARAMS = frozenset(
    {"token", "access_token", "api_key", "apikey", "key", "auth", "authorization", "bearer", "password", "secret"}
)
WEBHOOK_PREFIX = "/webhooks/"
WILDCARDS = ("0.0.0.0", "::", "[::]")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # what the SDK allows on its own loopback binds
MCP_BODY_LIMIT = 1024 * 1024  # bytes; JSON-RPC requests to this server are a few hundred bytes
HEALTH_TIMEOUT = 2.0  # seconds the ledger has to answer /healthz
WEBHOOK_BODY_LIMIT = MAX_BODY  # the webhook route's own limit, enforced here before anything reads the body


def http_app(app: App, host: str) -> ASGIApp:
    """The ASGI app for `smsrent-mcp --http`. Raises ValueError for a non-loopback host without a credential."""
    if not is_loopback(host) and not app.settings.http_auth:
        raise ValueError(
            f"refusing to serve on {host} without a credential: anyone who can reach it could spend your money."
            " Set SMSRENT_HTTP_TOKEN, SMSRENT_AGENTS_FILE or SMSRENT_OAUTH_ISSUER, or bind 127.0.0.1."
        )
    security = _allowlist(host, () if is_loopback(host) else app.settings.http_allowed_hosts)

    async def healthz(request: Request) -> Response:
        """200 while serving, "degraded" when a background task keeps failing (the tools still answer); 503
        "unavailable" while the ledger's database cannot be reached. The version, database, providers (and which
        of them this server polls, leading their accounts) and tasks only for a caller with a credential (or when
        none is configured)."""
        state = app.runtime.state
        database = "ok" if state is None or await _reachable(state.rentals.ledger) else "unreachable"
        status = (
            "starting"
            if state is None
            else "unavailable"
            if database != "ok"
            else "degraded"
            if app.supervisor.degraded
            else "ok"
        )
        code = 503 if status == "unavailable" else 200
        if caller(request.scope) is None:
            return JSONResponse({"status": status}, status_code=code)
        providers = {} if state is None else {n: {"sandbox": p.sandbox} for n, p in state.rentals.providers.items()}
        leads = [] if state is None else sorted(state.delivery.leading)
        tasks = app.supervisor.report()
        body = {"status": status, "version": __version__, "database": database, "providers": providers}
        return JSONResponse(body | {"polls": leads, "tasks": tasks}, status_code=code)

    app.mcp.custom_route("/healthz", methods=["GET"])(healthz)
    route = webhook_route(app.runtime, app.settings, app.webhook_secret)
    app.mcp.custom_route(route.path, methods=["POST"])(route.endpoint)
    observe.add_routes(app)
    starlette: Starlette = app.mcp.streamable_http_app(
        streamable_http_path=MCP_PATH, host=host, transport_security=security
    )
    starlette.router.routes[:0] = metadata_routes(app.settings)  # ahead of the SDK's own, which lists fewer scopes
    starlette.user_middleware.append(Middleware(BodyLimit))  # inside the SDK's authentication: it knows the caller
    return NoCredentialInUrl(starlette, app.credentials)


async def _reachable(ledger: Ledger) -> bool:
    """Whether the ledger answers (its database's clock) within HEALTH_TIMEOUT seconds."""
    with anyio.move_on_after(HEALTH_TIMEOUT):
        try:
            await ledger.now()
        except LedgerUnavailable:
            return False
        return True
    return False


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
    counted as it streams in, buffered up to the limit, and replayed to the app once complete. A `/mcp` request
    without an accepted credential goes through unread: the SDK answers it 401 without reading its body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] == MCP_PATH and caller(scope) is None):
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
    """A request whose query string carries a credential (a parameter named like one, or the owner token or an
    agent key itself) is refused with 400 on every route but the webhook's: URLs end up in logs, browser history
    and Referer headers."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None) -> None:
        self.app = app
        self._credentials = credentials

    def _credential(self, name: str, value: str) -> bool:
        return name.lower() in CREDENTIAL_PARAMS or (self._credentials is not None and self._credentials.known(value))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        leaked = any(self._credential(name, value) for name, value in query)
        if scope["type"] == "http" and leaked and not scope["path"].startswith(WEBHOOK_PREFIX):
            response = JSONResponse(
                {
                    "error": "credential in URL",
                    "detail": "credentials are refused in the query string; send Authorization: Bearer"
                    " <credential> instead, and change the credential if this URL was shared or logged",
                },
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

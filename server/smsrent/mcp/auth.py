"""Who is calling over HTTP, and the one function every handler asks: `principal(ctx)`.

Every credential goes through one SDK `TokenVerifier` (`Credentials`): the owner token (`SMSRENT_HTTP_TOKEN`,
every scope), agent keys from the agents file, and JWT access tokens of `SMSRENT_OAUTH_ISSUER`. The token it
returns names the principal (client id = agent name, subject, issuer), so the SDK binds each 2025-era session
and each sealed request state to it. Scopes travel as `smsrent:read|spend|admin`; `/mcp` requires
`smsrent:read`, which every scope implies, so a credential with none is refused with 403 `insufficient_scope`.

Protected-resource metadata (RFC 9728) is served only with an issuer: it names the authorization server, and
without one there is none to advertise (agent keys and the owner token are given out by hand).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult
from mcp.server.mcpserver import Context
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope as AsgiScope

from smsrent.agents import AgentEntry, Agents, AgentsFile, fingerprint, key_digest
from smsrent.config import Settings
from smsrent.domain.principal import OWNER, SCOPES, Principal, granted
from smsrent.mcp.oauth import SCOPE_PREFIX, JwtVerifier, TokenClaims

log = logging.getLogger("smsrent")

METADATA_PATH = "/.well-known/oauth-protected-resource"
REQUIRED_SCOPE = f"{SCOPE_PREFIX}read"
# AuthSettings requires an issuer URL even where no authorization server exists; without a resource URL the SDK
# serves no metadata and shows this nowhere.
NO_ISSUER = "http://127.0.0.1"
# URLs as configured: an issuer is compared as an exact string (RFC 8414), so no trailing slash is added.
_URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))


class PrincipalToken(AccessToken):
    """An accepted credential and the principal it names."""

    principal: Principal


class Credentials:
    """The SDK `TokenVerifier` for every credential this server accepts. Reading the agents file can raise
    AgentsFileError (a bad file stops the start)."""

    def __init__(self, settings: Settings) -> None:
        token = settings.http_token
        self._owner = None if token is None else key_digest(token.get_secret_value()).encode()
        self.agents = None if settings.agents_file is None else AgentsFile(settings.agents_file)
        resource = resource_url(settings)
        issuer = settings.oauth_issuer
        self.oauth = None if issuer is None or resource is None else JwtVerifier(issuer, resource)
        self._defaults = settings.agent_daily_budget, settings.agent_max_price
        self.refused: Callable[[str], Awaitable[None]] | None = None  # told the fingerprint of each refused token

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal `token` names, or None (401). The owner token and every agent key are compared in
        constant time, all of them each time; only a token that is none of them is tried as a JWT."""
        token = token.strip()
        agents = Agents() if self.agents is None else self.agents.current()
        found = self._by_key(token, agents)
        if found is not None:
            return self._token(token, found)
        if self.oauth is not None and token.count(".") == 2:
            claims = await self.oauth.verify(token)
            if claims is not None:
                return self._oauth_token(token, claims, agents)
        shown = fingerprint(key_digest(token))
        log.info("refused a bearer credential (sha256 %s...)", shown)
        if self.refused is not None:
            await self.refused(shown)
        return None

    def known(self, value: str) -> bool:
        """Whether `value` is the owner token or an agent key (to refuse one shown in a URL)."""
        return self._by_key(value, Agents() if self.agents is None else self.agents.current()) is not None

    def _by_key(self, token: str, agents: Agents) -> Principal | None:
        """The owner, or the agent whose key `token` is."""
        is_owner = self._owner is not None and hmac.compare_digest(key_digest(token).encode(), self._owner)
        entry = agents.by_key(token)  # compares every key, whatever the owner check found
        if is_owner:
            return OWNER
        return None if entry is None else Principal(entry.name, granted(entry.scopes), *self.limits(entry))

    def _oauth_token(self, token: str, claims: TokenClaims, agents: Agents) -> PrincipalToken:
        """The agent `iss` + `sub`: named and limited by its `subject` entry if the file has one (whose scopes
        then narrow the token's), else `oauth:<sub>` with the default limits."""
        assert self.oauth is not None
        entry = agents.by_subject(claims.subject)
        scopes = granted(claims.scopes) & (granted(entry.scopes) if entry is not None else frozenset(SCOPES))
        name = f"oauth:{claims.subject}" if entry is None else entry.name
        found = Principal(name, scopes, *self.limits(entry), subject=claims.subject, issuer=self.oauth.issuer)
        return self._token(token, found, claims.expires_at, self.oauth.resource)

    def limits(self, entry: AgentEntry | None) -> tuple[Decimal | None, Decimal | None]:
        """An agent's daily budget and price cap: its entry's, else SMSRENT_AGENT_DAILY_BUDGET / _MAX_PRICE."""
        daily_budget, max_price = self._defaults
        if entry is None:
            return daily_budget, max_price
        return entry.daily_budget or daily_budget, entry.max_price or max_price

    def _token(
        self, token: str, principal: Principal, expires_at: int | None = None, resource: str | None = None
    ) -> PrincipalToken:
        return PrincipalToken(
            token=token,
            client_id=principal.name,
            scopes=[f"{SCOPE_PREFIX}{scope}" for scope in SCOPES if scope in principal.scopes],
            expires_at=expires_at,
            resource=resource,
            subject=principal.subject,
            claims=None if principal.issuer is None else {"iss": principal.issuer},
            principal=principal,
        )


def resource_url(settings: Settings) -> str | None:
    """This server as an OAuth resource (`<SMSRENT_PUBLIC_URL>/mcp`), when tokens of an issuer are accepted."""
    if settings.oauth_issuer is None or settings.public_url is None:
        return None
    return f"{settings.public_url}/mcp"


def auth_settings(settings: Settings) -> AuthSettings | None:
    """What the SDK needs to require a credential on `/mcp`; None when no credential is configured (a loopback
    server open to local clients, as before agents existed)."""
    if not settings.http_auth:
        return None
    resource = resource_url(settings)
    return AuthSettings(
        issuer_url=_URL.validate_python(settings.oauth_issuer or NO_ISSUER),
        resource_server_url=None if resource is None else _URL.validate_python(resource),
        required_scopes=[REQUIRED_SCOPE],
        validate_token_resource=False,  # the JWT verifier checks `aud`; keys and the owner token have none
    )


def metadata_routes(settings: Settings) -> list[Route]:
    """RFC 9728 protected-resource metadata at `/.well-known/oauth-protected-resource/mcp` (where the SDK puts it,
    and where `WWW-Authenticate` points) and at `/.well-known/oauth-protected-resource`, naming the issuer and
    every scope (the SDK's own would list only the required one). None without an issuer."""
    resource = resource_url(settings)
    if resource is None or settings.oauth_issuer is None:
        return []
    (route,) = create_protected_resource_routes(
        resource_url=_URL.validate_python(resource),
        authorization_servers=[_URL.validate_python(settings.oauth_issuer)],
        scopes_supported=[f"{SCOPE_PREFIX}{scope}" for scope in SCOPES],
        resource_name="smsrent",
    )
    return [route, Route(METADATA_PATH, endpoint=route.endpoint, methods=["GET", "OPTIONS"])]


def caller(scope: AsgiScope) -> Principal | None:
    """Who sent an HTTP request: its principal; the owner when the server requires no credential (the SDK's
    authentication middleware did not run); None for a request without an accepted credential."""
    if "user" not in scope:
        return OWNER
    user = scope["user"]
    if isinstance(user, AuthenticatedUser) and isinstance(user.access_token, PrincipalToken):
        return user.access_token.principal
    return None


def principal(ctx: Context[Any] | ServerRequestContext[Any, Any]) -> Principal:
    """The caller of an MCP request (tool, resource, prompt, completion, or middleware): its principal over
    HTTP, the owner on stdio and in memory. Never the owner by default for an HTTP request that reached a
    handler without a credential where one is required: that raises."""
    request = (ctx if isinstance(ctx, ServerRequestContext) else ctx.request_context).request
    if request is None:
        return OWNER
    found = caller(request.scope) if isinstance(request, Request) else None
    if found is None:
        raise PermissionError("this request carries no accepted credential")
    return found


_CALLER: ContextVar[Principal] = ContextVar("smsrent_caller", default=OWNER)


async def caller_known(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: the request's principal, for handlers the SDK gives no context (static resources, completions,
    the subscription bus when a listen stream opens): see `current_caller`."""
    token = _CALLER.set(principal(ctx))
    try:
        return await call_next(ctx)
    finally:
        _CALLER.reset(token)


def current_caller() -> Principal:
    """The principal of the request being handled (set by `caller_known`; the owner outside any request)."""
    return _CALLER.get()


def unauthorized(settings: Settings, route: str) -> JSONResponse:
    """401 for an HTTP route that needs a credential, pointing to the metadata like `/mcp`'s own answer."""
    challenge = f'Bearer error="invalid_token", error_description="{route} needs a credential"'
    resource = resource_url(settings)
    if resource is not None:
        challenge += f', resource_metadata="{build_resource_metadata_url(_URL.validate_python(resource))}"'
    return JSONResponse(
        {"error": "unauthorized", "detail": f"{route} needs Authorization: Bearer <credential>"},
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )

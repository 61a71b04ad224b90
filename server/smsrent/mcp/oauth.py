"""JWT access tokens from one OAuth 2.1 authorization server (`SMSRENT_OAUTH_ISSUER`), checked as the MCP
authorization specification asks of a resource server.

The issuer's signing keys come from its JWKS, found through its RFC 8414 metadata (or OpenID Connect discovery)
and cached by `kid`. A token naming a `kid` the cache lacks makes one refetch, at most once a minute however many
such tokens arrive (no refetch storm against the issuer); until then it is refused. Only asymmetric algorithms
are accepted (RS256, ES256, EdDSA), each only with a key of its own type: never `none`, never an HMAC, so a
token "signed" with the public key as an HMAC secret is refused. A token must name this server's resource in
`aud`, the issuer in `iss`, and a `sub`, and be unexpired (60 s leeway). The token is never sent anywhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import jwt

from smsrent.config import is_loopback
from smsrent.domain.principal import SCOPES, Scope

log = logging.getLogger("smsrent")

ALGORITHMS = ("RS256", "ES256", "EdDSA")
KEY_TYPES = {"RS256": ("RSA", None), "ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}  # alg: (kty, crv)
LEEWAY = 60  # seconds of clock skew tolerated on exp, nbf and iat
REFETCH_EVERY = 60.0  # seconds: the least time between two JWKS fetches
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
MAX_DOCUMENT = 256 * 1024  # bytes of metadata or JWKS read at most
SCOPE_PREFIX = "smsrent:"
MAX_SUBJECT = 255


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    subject: str
    scopes: frozenset[Scope]
    expires_at: int  # the last second it is accepted: `exp` plus the leeway (the SDK refuses it after that)


class IssuerUnavailable(Exception):
    """The issuer's metadata or keys could not be fetched or read."""


class JwtVerifier:
    """Verifies JWT access tokens of `issuer` for `resource` (`<SMSRENT_PUBLIC_URL>/mcp`)."""

    def __init__(self, issuer: str, resource: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.resource = resource
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()

    async def verify(self, token: str) -> TokenClaims | None:
        """The token's claims, or None (logged with the reason, never the token) if it is not one to accept."""
        try:
            return await self._verify(token)
        except (jwt.PyJWTError, IssuerUnavailable, ValueError) as err:
            log.info("refused an OAuth access token: %s", err)
            return None

    async def _verify(self, token: str) -> TokenClaims:
        header = jwt.get_unverified_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {str(algorithm)[:20]!r} is not one of {', '.join(ALGORITHMS)}")
        if not isinstance(kid, str):
            raise ValueError("the token names no key (kid)")
        key = await self._key(kid)
        if key is None:
            raise ValueError(f"no key {kid[:64]!r} in the issuer's JWKS")
        if key.algorithm_name != algorithm:
            raise ValueError(f"key {kid[:64]!r} is for {key.algorithm_name}, the token says {algorithm}")
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self.resource,
            issuer=self.issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT or not subject.isprintable():
            raise ValueError(f"sub must be a string of 1 to {MAX_SUBJECT} printable characters")
        return TokenClaims(subject, token_scopes(claims), int(claims["exp"]) + LEEWAY)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        """The issuer's key `kid`, refetching the JWKS if it is unknown and the last fetch is a minute old."""
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # a burst of unknown kids waits here for one fetch, then reads the cache
            if kid not in self._keys and self._refetch_allowed():
                self._fetched_at = self._clock()
                self._keys = await self._fetch_keys()
            return self._keys.get(kid)

    def _refetch_allowed(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= REFETCH_EVERY

    async def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as http:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover(http)
            document = await _fetch_json(http, self._jwks_uri)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise IssuerUnavailable(f"{self._jwks_uri} holds no keys list")
        found = {}
        for data in keys:
            key = _signing_key(data)
            if key is not None:
                found[data["kid"]] = key
        log.info("fetched %d signing keys of %s", len(found), self.issuer)
        return found

    async def _discover(self, http: httpx.AsyncClient) -> str:
        """The issuer's `jwks_uri`, from the first of its metadata documents that answers (RFC 8414, then OpenID
        Connect, in the order the MCP authorization specification gives)."""
        problems = []
        for url in metadata_urls(self.issuer):
            try:
                metadata = await _fetch_json(http, url)
            except IssuerUnavailable as err:
                problems.append(str(err))
                continue
            if metadata.get("issuer") != self.issuer:
                raise IssuerUnavailable(f"{url} names issuer {str(metadata.get('issuer'))[:200]!r}, not {self.issuer}")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not _safe_url(jwks_uri):
                raise IssuerUnavailable(f"{url} gives no https jwks_uri")
            return jwks_uri
        raise IssuerUnavailable(f"no metadata for issuer {self.issuer}: {'; '.join(problems)}")


def token_scopes(claims: dict[str, Any]) -> frozenset[Scope]:
    """The smsrent scopes of a token: `scope` (space-separated, RFC 9068) or `scp` (a list), `smsrent:` words."""
    words: list[Any] = []
    if isinstance(claims.get("scope"), str):
        words = claims["scope"].split()
    elif isinstance(claims.get("scp"), list):
        words = claims["scp"]
    names = {w.removeprefix(SCOPE_PREFIX) for w in words if isinstance(w, str) and w.startswith(SCOPE_PREFIX)}
    return frozenset(s for s in SCOPES if s in names)


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live: RFC 8414 (path inserted after the host), then OpenID Connect
    (inserted, then appended)."""
    url = urlsplit(issuer)
    origin, path = f"{url.scheme}://{url.netloc}", url.path.rstrip("/")
    if not path:
        return [f"{origin}/.well-known/oauth-authorization-server", f"{origin}/.well-known/openid-configuration"]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


def _signing_key(data: object) -> jwt.PyJWK | None:
    """A JWK usable for one of ALGORITHMS (an RSA, P-256 or Ed25519 public key meant for signatures), else None:
    symmetric (`oct`) keys, other curves and other algorithms are left out, whatever the JWKS says."""
    if not isinstance(data, dict) or data.get("use", "sig") != "sig" or not isinstance(data.get("kid"), str):
        return None
    kty, crv = data.get("kty"), data.get("crv")
    algorithm = next((a for a, (t, c) in KEY_TYPES.items() if t == kty and c in (None, crv)), None)
    if algorithm is None or data.get("alg", algorithm) != algorithm:
        return None
    try:
        return jwt.PyJWK(data, algorithm)
    except jwt.PyJWTError:
        return None


def _safe_url(url: str) -> bool:
    """https, or http to a loopback address."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


async def _fetch_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A JSON object from `url`, read up to MAX_DOCUMENT bytes."""
    try:
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise IssuerUnavailable(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise IssuerUnavailable(f"{url} sent more than {MAX_DOCUMENT} bytes")
    except httpx.HTTPError as err:
        raise IssuerUnavailable(f"{url}: {type(err).__name__}") from err
    try:
        document = json.loads(body)
    except ValueError as err:
        raise IssuerUnavailable(f"{url} sent no JSON") from err
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{url} sent no JSON object")
    return document

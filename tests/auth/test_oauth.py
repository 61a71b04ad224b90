"""OAuth 2.1 access tokens from a loopback authorization server (its RFC 8414 metadata and JWKS on 127.0.0.1,
tokens signed here): which are accepted, the attacks that get 401, the JWKS refetch limit, the scopes a token
carries, and the protected-resource metadata and `WWW-Authenticate` challenge of the MCP authorization spec."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from smsrent.mcp.app import App
from smsrent.mcp.oauth import JwtVerifier, metadata_urls
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.auth import (
    ALL_TOOLS,
    PUBLIC_URL,
    READ_TOOLS,
    RESOURCE,
    AuthServer,
    agents_toml,
    bearer,
    forged,
    public_pem,
)
from tests.helpers import sandbox_app
from tests.helpers import settings as make_settings
from tests.mcp import ok
from tests.mcp.served import INITIALIZE, MCP_HEADERS, authorized, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

METADATA_URL = "https://smsrent.example.org/.well-known/oauth-protected-resource/mcp"
CHALLENGE = (
    f'Bearer error="invalid_token", error_description="Authentication required", resource_metadata="{METADATA_URL}"'
)


@asynccontextmanager
async def oauth_served(
    tmp_path: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, authority: AuthServer
) -> AsyncIterator[tuple[App, str]]:
    """The authorization server and smsrent (accepting its tokens, with an agents file naming one subject) on
    loopback; yields the app and smsrent's base URL."""
    agents_path = tmp_path / "agents.toml"
    agents_path.write_text(agents_toml({"name": "narrowed", "subject": "user-narrow", "scopes": ["read"]}))
    async with serve_loopback(authority.app) as issuer:
        authority.issuer = issuer
        app = sandbox_app(
            tmp_path, gotsms, getatext, oauth_issuer=issuer, public_url=PUBLIC_URL, agents_file=agents_path
        )
        async with served(app) as base:
            yield app, base


@pytest.fixture
def authority() -> AuthServer:
    return AuthServer.with_keys()


async def initialize(base: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(token)})


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"], ids=["RS256", "ES256", "EdDSA"])
async def test_a_valid_token_is_accepted(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    authority: AuthServer,
    mode: str,
    kid: str,
) -> None:
    async with oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base):
        async with authorized(base, mode, authority.token(kid)) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == ALL_TOOLS
            balance = await ok(client, "get_balance", provider="gotsms")
            assert balance["balances"][0]["provider"] == "gotsms"
        async with authorized(base, mode, authority.token(kid, exp=int(time.time()) - 30)) as client:
            await ok(client, "get_balance", provider="gotsms")  # expired 30 s ago: inside the 60 s leeway
    assert authority.requests == ["/.well-known/oauth-authorization-server", "/jwks"]  # found once, then cached


def attacks(authority: AuthServer) -> dict[str, str]:
    """A token for each way of getting in without a valid token of this issuer for this resource."""
    now = int(time.time())
    authority.add("stranger", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False)
    rsa_header = {"typ": "JWT", "kid": "rsa-1"}
    return {
        "expired": authority.token(exp=now - 61 - 60),
        "not yet valid": authority.token(nbf=now + 600),
        "wrong audience": authority.token(aud="https://other.example.org/mcp"),
        "audience without /mcp": authority.token(aud=PUBLIC_URL),
        "wrong issuer": authority.token(iss="https://evil.example.org"),
        "no subject": authority.token(sub=None),
        "no expiry": authority.token(exp=None),
        "alg none": forged({**rsa_header, "alg": "none"}, authority.claims(), None),
        "foreign key": authority.token("rsa-1", signer="stranger"),
        "HS256 with the public key": forged(
            {**rsa_header, "alg": "HS256"}, authority.claims(), public_pem(authority.keys["rsa-1"])
        ),
        "EdDSA header on an RSA key": authority.token("rsa-1", signer="ed-1"),
        "unknown kid": authority.token("stranger"),
        "no kid": forged({"alg": "RS256"}, authority.claims(), None),
        "garbage": "a.b.c",
    }


async def test_every_attack_gets_401_with_the_challenge(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, authority: AuthServer
) -> None:
    async with oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base):
        assert (await initialize(base, authority.token())).status_code == 200  # the keys are fetched
        answers = {}
        for name, token in attacks(authority).items():
            answer = await initialize(base, token)
            answers[name] = (answer.status_code, answer.headers.get("www-authenticate"))
    assert answers == dict.fromkeys(answers, (401, CHALLENGE))
    assert gotsms_sandbox.requests == getatext_sandbox.requests == []


async def test_a_burst_of_unknown_kids_makes_no_refetch_storm(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, authority: AuthServer
) -> None:
    authority.add("later", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False)
    async with oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base):
        assert (await initialize(base, authority.token())).status_code == 200
        statuses: list[int] = []

        async def one(number: int) -> None:
            statuses.append((await initialize(base, authority.token("later", sub=f"u{number}"))).status_code)

        async with anyio.create_task_group() as tg:
            for number in range(25):
                tg.start_soon(one, number)
    assert statuses == [401] * 25
    assert authority.fetches() == 1  # the keys were fetched less than a minute ago: no refetch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unknown_kid_refetches_the_keys_at_most_once_a_minute(authority: AuthServer) -> None:
    """A rotated key is found by one refetch once the last fetch is a minute old, however many tokens ask."""
    authority.add("rotated", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False)
    clock = Clock()
    async with serve_loopback(authority.app) as issuer:
        authority.issuer = issuer
        verifier = JwtVerifier(issuer, RESOURCE, clock)
        assert await verifier.verify(authority.token()) is not None
        assert authority.fetches() == 1
        clock.now += 61
        results: list[object] = []

        async def one() -> None:
            results.append(await verifier.verify(authority.token("rotated")))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert results == [None] * 10
        assert authority.fetches() == 2  # one refetch for the whole burst

        authority.published.add("rotated")  # the issuer rotates its keys
        clock.now += 30
        assert await verifier.verify(authority.token("rotated")) is None  # not before a minute has passed
        assert authority.fetches() == 2
        clock.now += 30
        claims = await verifier.verify(authority.token("rotated"))
        assert claims is not None
        assert claims.subject == "user-7"
        assert authority.fetches() == 3


@pytest.mark.parametrize(
    ("claims", "tools"),
    [
        ({"scope": "smsrent:read"}, READ_TOOLS),
        ({"scope": "openid smsrent:spend email"}, ALL_TOOLS),  # spend implies read
        ({"scope": None, "scp": ["smsrent:read", "smsrent:spend"]}, ALL_TOOLS),
        ({"sub": "user-narrow"}, READ_TOOLS),  # its agents-file entry narrows the token's scopes to read
    ],
    ids=["scope read", "scope spend", "scp list", "narrowed by its entry"],
)
async def test_a_token_gets_the_tools_of_its_scopes(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    authority: AuthServer,
    claims: dict[str, Any],
    tools: set[str],
) -> None:
    async with (
        oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base),
        authorized(base, "legacy", authority.token(**claims)) as client,
    ):
        assert {tool.name for tool in (await client.list_tools()).tools} == tools


async def test_a_token_without_an_smsrent_scope_is_forbidden(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, authority: AuthServer
) -> None:
    async with oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base):
        answer = await initialize(base, authority.token(scope="openid profile smsrent:root"))
    assert answer.status_code == 403
    assert answer.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", error_description="Required scope: smsrent:read",'
        f' resource_metadata="{METADATA_URL}"'
    )


async def test_protected_resource_metadata_names_the_issuer_and_the_scopes(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, authority: AuthServer
) -> None:
    async with (
        oauth_served(tmp_path, gotsms_sandbox, getatext_sandbox, authority) as (_, base),
        httpx.AsyncClient(base_url=base) as http,
    ):
        documents = [
            await http.get(path)
            for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
        ]
        bare = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    for document in documents:
        assert document.status_code == 200
        assert document.json() == {
            "resource": RESOURCE,
            "authorization_servers": [authority.issuer],
            "scopes_supported": ["smsrent:read", "smsrent:spend", "smsrent:admin"],
            "bearer_methods_supported": ["header"],
            "resource_name": "smsrent",
        }
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == CHALLENGE


async def test_without_an_issuer_no_authorization_server_is_advertised(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    agents_path = tmp_path / "agents.toml"
    agents_path.write_text("")
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, agents_file=agents_path, public_url=PUBLIC_URL)
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        documents = [
            await http.get(path)
            for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
        ]
        bare = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert [d.status_code for d in documents] == [404, 404]
    assert bare.status_code == 401
    assert "resource_metadata" not in bare.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("issuer", "urls"),
    [
        (
            "https://auth.example.org",
            [
                "https://auth.example.org/.well-known/oauth-authorization-server",
                "https://auth.example.org/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example.org/tenant1/",
            [
                "https://auth.example.org/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.org/.well-known/openid-configuration/tenant1",
                "https://auth.example.org/tenant1/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_metadata_is_looked_for_where_the_specification_says(issuer: str, urls: list[str]) -> None:
    assert metadata_urls(issuer) == urls


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"oauth_issuer": "https://auth.example.org"}, "SMSRENT_OAUTH_ISSUER needs SMSRENT_PUBLIC_URL"),
        ({"oauth_issuer": "http://auth.example.org", "public_url": PUBLIC_URL}, "use https://"),
        ({"public_url": "https://smsrent.example.org/?x=1"}, "without query or fragment"),
    ],
)
def test_bad_oauth_settings_are_refused(tmp_path: Path, settings: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_settings(tmp_path, **settings)

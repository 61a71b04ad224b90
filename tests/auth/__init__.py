"""Tests of who may call: agent keys, OAuth access tokens, the owner token, and what each credential's scopes let
it see and call.

Shared here: an agents file written for a test, and a loopback OAuth authorization server (its RFC 8414
metadata and JWKS, served by uvicorn on 127.0.0.1, counting the requests it gets) whose tokens the tests sign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from smsrent.agents import key_digest
from smsrent.mcp.app import App
from smsrent.mcp.tools import TOOLS
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp.served import TOKEN

READER_KEY = "smsrent_reader-key-3b8d0c1e9f"
SPENDER_KEY = "smsrent_spender-key-a41f7e20cd"
ADMIN_KEY = "smsrent_admin-key-77c2e9b5a0"
ALICE_KEY = "smsrent_alice-key-0c5e7a91d2"
BOB_KEY = "smsrent_bob-key-6f1d28b4e3"
BOSS_KEY = "smsrent_boss-key-9a3c4d7e10"
LOOKER_KEY = "smsrent_looker-key-41b9e6c0f7"
PUBLIC_URL = "https://smsrent.example.org"  # the resource is <it>/mcp whatever address the test serves on
RESOURCE = f"{PUBLIC_URL}/mcp"
ALL_TOOLS = {spec.name for spec in TOOLS}
READ_TOOLS = {"get_balance", "list_plans", "list_rentals", "get_messages", "wait_for_code", "wake_up"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def agents_toml(*tables: dict[str, Any]) -> str:
    """An agents file of `tables` (strings and lists of strings only)."""
    blocks = []
    for table in tables:
        lines = ["[[agent]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def two_agents_file(path: Path) -> Path:
    """`reader` (read only, limits of its own) and `spender` (read and spend), by key; `boss` (admin)."""
    path.write_text(
        agents_toml(
            {"name": "reader", "key_sha256": key_digest(READER_KEY), "scopes": ["read"], "daily_budget": "3.00"},
            {"name": "spender", "key_sha256": key_digest(SPENDER_KEY), "scopes": ["read", "spend"]},
            {"name": "boss", "key_sha256": key_digest(ADMIN_KEY), "scopes": ["admin"]},
        )
    )
    return path


def agents_app(tmp_path: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, **overrides: object) -> App:
    """The owner token and four agents: alice (spend; a 1.00 daily budget and a 1.00 cap of her own), bob (spend,
    the server's limits only), boss (admin and spend), looker (read)."""
    path = tmp_path / "agents.toml"
    path.write_text(
        agents_toml(
            {
                "name": "alice",
                "key_sha256": key_digest(ALICE_KEY),
                "scopes": ["spend"],
                "daily_budget": "1.00",
                "max_price": "1.00",
            },
            {"name": "bob", "key_sha256": key_digest(BOB_KEY), "scopes": ["spend"]},
            {"name": "boss", "key_sha256": key_digest(BOSS_KEY), "scopes": ["admin", "spend"]},
            {"name": "looker", "key_sha256": key_digest(LOOKER_KEY), "scopes": ["read"]},
        )
    )
    return sandbox_app(tmp_path, gotsms, getatext, http_token=TOKEN, agents_file=path, **overrides)


# -- A loopback authorization server ---------------------------------------------------------------------------


def public_jwk(key: PrivateKeyTypes, kid: str) -> dict[str, Any]:
    """The public half of `key` as a JWK (no `alg`: the kind of key says which algorithm)."""
    public = key.public_key()  # type: ignore[union-attr]
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    return {**data, "kid": kid, "use": "sig"}


def public_pem(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


ALGORITHM_OF = {rsa.RSAPrivateKey: "RS256", ec.EllipticCurvePrivateKey: "ES256", ed25519.Ed25519PrivateKey: "EdDSA"}


@dataclass
class AuthServer:
    """An OAuth authorization server on loopback: its metadata at `/.well-known/oauth-authorization-server`,
    its signing keys at `/jwks` (those in `published`), and every path it was asked for in `requests`."""

    keys: dict[str, PrivateKeyTypes] = field(default_factory=dict)  # kid: private key
    published: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    issuer: str = ""  # set once served

    @classmethod
    def with_keys(cls) -> AuthServer:
        server = cls()
        server.add("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        server.add("ec-1", ec.generate_private_key(ec.SECP256R1()))
        server.add("ed-1", ed25519.Ed25519PrivateKey.generate())
        return server

    def add(self, kid: str, key: PrivateKeyTypes, *, publish: bool = True) -> None:
        self.keys[kid] = key
        if publish:
            self.published.add(kid)

    @property
    def app(self) -> Starlette:
        async def metadata(request: Request) -> JSONResponse:
            self.requests.append(request.url.path)
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                }
            )

        async def jwks(request: Request) -> JSONResponse:
            self.requests.append(request.url.path)
            return JSONResponse({"keys": [public_jwk(self.keys[kid], kid) for kid in sorted(self.published)]})

        return Starlette(routes=[Route("/.well-known/oauth-authorization-server", metadata), Route("/jwks", jwks)])

    def fetches(self) -> int:
        return self.requests.count("/jwks")

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "user-7",
            "aud": RESOURCE,
            "iat": now,
            "exp": now + 600,
            "scope": "smsrent:read smsrent:spend",
        }
        return {k: v for k, v in {**claims, **overrides}.items() if v is not None}

    def token(self, kid: str = "rsa-1", *, signer: str | None = None, **overrides: Any) -> str:
        """A token naming key `kid`, signed with key `signer` (default: `kid` itself), claims as `claims()`."""
        key = self.keys[signer or kid]
        algorithm = next(a for kind, a in ALGORITHM_OF.items() if isinstance(key, kind))
        return jwt.encode(self.claims(**overrides), key, algorithm, headers={"kid": kid})  # type: ignore[arg-type]


def forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT put together by hand: HS256 with `secret` as the HMAC key, or no signature at all (`None`)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"

"""HTTP hardening beyond tests/mcp/test_http.py (which covers the token on `initialize`, the non-loopback refusal,
a foreign Host and Origin on 127.0.0.1 and a plainly wrong webhook secret): oversized bodies, every wrong way of
presenting the token (none of which reaches a tool), look-alike Host and Origin headers on every kind of bind,
and near misses of the webhook secret."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from smsrent.mcp.http import MCP_BODY_LIMIT, WEBHOOK_BODY_LIMIT
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.mcp import local_id, posts, rent_getatext
from tests.mcp.served import INITIALIZE, MCP_HEADERS, SECRET, TOKEN, hook_app, open_session, push_body, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
RENT = {
    "name": "rent_number",
    "arguments": {"service": "Telegram", "country": "USA", "provider": "gotsms", "max_price": "2"},
}


# -- Helpers ------------------------------------------------------------------------------------------------


def tool_call(params: dict[str, Any], size: int | None = None) -> bytes:
    """A JSON-RPC tools/call, padded with trailing whitespace (still valid JSON) to exactly `size` bytes."""
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).encode()
    return body if size is None else body.ljust(size)


def tool_result(answer: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result carried by an SSE answer."""
    data = next(line for line in answer.text.splitlines() if line.startswith("data: "))
    result: dict[str, Any] = json.loads(data.removeprefix("data: "))["result"]
    return result


def purchase_states(data_dir: Path) -> list[str]:
    with closing(sqlite3.connect(data_dir / "ledger.sqlite3")) as db:
        return [state for (state,) in db.execute("SELECT state FROM purchases ORDER BY purchase_id")]


async def unfinished_post(
    base: str, path: str, headers: dict[str, str], chunks: Sequence[bytes]
) -> tuple[int | None, Any]:
    """POST over a raw connection that sends the head and `chunks` but never finishes the body; returns the
    answer's status and JSON, or (None, None) when no answer came within 5 s (one that waits for the rest of
    the body never comes). A timeout is not raised: the server must shut down cleanly for the test to fail."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            await stream.send(chunk)
        received = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in received:
                received += await stream.receive()
            status_and_headers, _, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", status_and_headers)
            assert length is not None, status_and_headers
            while len(body) < int(length[1]):
                body += await stream.receive()
            return int(status_and_headers.split()[1]), json.loads(body)
    return None, None


async def statuses(base: str, cases: dict[str, dict[str, str]], auth: dict[str, str]) -> dict[str, int]:
    """The status of an `initialize` sent with each case's extra headers."""
    async with httpx.AsyncClient() as http:
        return {
            name: (
                await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **auth, **extra})
            ).status_code
            for name, extra in cases.items()
        }


# -- Body size ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["declared", "chunked"])
@pytest.mark.parametrize(
    ("path", "limit"),
    [("/mcp", MCP_BODY_LIMIT), (f"/webhooks/getatext/{SECRET}", WEBHOOK_BODY_LIMIT)],
    ids=["mcp", "webhook"],
)
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_oversized_body_is_refused_before_it_is_read(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    framing: str,
    path: str,
    limit: int,
    token: str | None,
) -> None:
    """A declared length above the limit is refused before any body byte is sent; a chunked body as soon as it
    passes the limit, while still unfinished. The JSON error is the middleware's (neither the SDK's plain-text
    413 nor the webhook route's own check), so neither saw the request."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=token)
    auth = AUTH if token and path == "/mcp" else {}  # the webhook has its secret path instead of the token
    headers = {**MCP_HEADERS, **auth}
    if framing == "declared":
        headers["Content-Length"] = str(limit + 1)
        chunks: list[bytes] = []
    else:
        headers["Transfer-Encoding"] = "chunked"
        piece = b" " * (limit // 4)
        chunks = [b"%x\r\n%b\r\n" % (len(piece), piece)] * 5  # 1.25 x the limit, and no closing 0-chunk
    async with served(app) as base:
        status, error = await unfinished_post(base, path, headers, chunks)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{base}/healthz", headers=AUTH if token else {})
    assert status == 413
    assert error == {"error": "request body too large", "max_bytes": limit}
    assert health.status_code == 200
    assert gotsms_sandbox.requests == getatext_sandbox.requests == []


async def test_body_limit_is_exact_and_a_chunked_body_within_it_reaches_the_tool(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """One byte over the limit buys nothing; a body of exactly the limit, streamed in chunks, is replayed intact
    to the SDK and buys."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    at_limit = tool_call(RENT, MCP_BODY_LIMIT)

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(at_limit), 100_000):
            yield at_limit[start : start + 100_000]

    async with served(app) as base, httpx.AsyncClient() as http:
        session = await open_session(http, base, {})
        over = await http.post(f"{base}/mcp", content=tool_call(RENT, MCP_BODY_LIMIT + 1), headers=session)
        posts_after_refusal = posts(gotsms_sandbox)
        taken = await http.post(f"{base}/mcp", content=chunked(), headers=session)
    assert over.status_code == 413
    assert posts_after_refusal == []
    assert taken.status_code == 200
    assert not tool_result(taken)["isError"], taken.text
    assert posts(gotsms_sandbox) == ["/api/rents"]


# -- Bearer token -------------------------------------------------------------------------------------------


async def test_no_wrong_credential_reaches_a_tool(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """A rent_number sent on an open session with any wrong credential is refused with 401 and buys nothing;
    the very same request with the token buys (so the refusals were the token's doing)."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN)
    basic = base64.b64encode(f"smsrent:{TOKEN}".encode()).decode()
    wrong: dict[str, tuple[dict[str, str], dict[str, str]]] = {  # name: (headers, query parameters)
        "none": ({}, {}),
        "wrong token": ({"Authorization": "Bearer not-the-token"}, {}),
        "prefix of the token": ({"Authorization": f"Bearer {TOKEN[:-1]}"}, {}),
        "token and more": ({"Authorization": f"Bearer {TOKEN}0"}, {}),
        "Basic scheme": ({"Authorization": f"Basic {basic}"}, {}),
        "Basic and the bare token": ({"Authorization": f"Basic {TOKEN}"}, {}),
        "another header": ({"X-API-Key": TOKEN}, {}),
        "query token": ({}, {"token": TOKEN}),
        "query access_token": ({}, {"access_token": TOKEN}),
    }
    async with served(app) as base, httpx.AsyncClient() as http:
        session = await open_session(http, base, AUTH)
        refused = {}
        for name, (headers, query) in wrong.items():
            answer = await http.post(
                f"{base}/mcp", content=tool_call(RENT), headers={**session, **headers}, params=query
            )
            assert TOKEN not in answer.text
            refused[name] = (answer.status_code, answer.headers.get("www-authenticate"))
        stranger_oversized = await http.post(
            f"{base}/mcp", content=tool_call(RENT, 2 * MCP_BODY_LIMIT), headers=session
        )
        posts_before, purchases_before = posts(gotsms_sandbox), purchase_states(tmp_path)
        right = await http.post(f"{base}/mcp", content=tool_call(RENT), headers={**session, **AUTH})
    challenge = 'Bearer error="invalid_token", error_description="Authentication required"'
    assert refused == {  # a credential in the query string is refused before anything else looks at the request
        name: (400, None) if query else (401, challenge) for name, (_, query) in wrong.items()
    }
    assert stranger_oversized.status_code == 401  # the credential comes first: a stranger's body is never read
    assert posts_before == []
    assert purchases_before == []
    assert right.status_code == 200
    assert not tool_result(right)["isError"], right.text
    assert posts(gotsms_sandbox) == ["/api/rents"]
    assert purchase_states(tmp_path) == ["bought"]


# -- DNS-rebinding protection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "own"),
    [
        ("127.0.0.1", "127.0.0.1:8000"),
        ("localhost", "localhost"),
        ("::1", "[::1]:8000"),
        ("[::1]", "[::1]"),
        ("127.0.0.2", "127.0.0.2:8000"),
    ],
)
async def test_every_loopback_bind_refuses_foreign_and_look_alike_hosts_and_origins(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, bind: str, own: str
) -> None:
    """The SDK guards only the loopback names it knows, so `--host [::1]` or 127.0.0.2 used to serve any Host and
    Origin; every loopback bind now refuses them (421 for Host, 403 for Origin) and accepts its own address."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    cases = {
        "own address": {"Host": own},
        "local page": {"Origin": "http://localhost:5173"},
        "foreign host": {"Host": "evil.example"},
        "look-alike host": {"Host": "127.0.0.1.evil.example"},
        "foreign origin": {"Origin": "http://evil.example"},
        "look-alike origin": {"Origin": "http://localhost.evil.example:8000"},
        "opaque origin": {"Origin": "null"},
    }
    async with served(app, bind) as base:
        answers = await statuses(base, cases, {})
    assert answers == {
        "own address": 200,
        "local page": 200,
        "foreign host": 421,
        "look-alike host": 421,
        "foreign origin": 403,
        "look-alike origin": 403,
        "opaque origin": 403,
    }


async def test_non_loopback_bind_checks_origin_too(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """With a token the Host and Origin checks still apply: look-alikes are refused, and a page of the server's
    own origin is accepted with or without a port (browsers leave the default port out; that was refused)."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN)
    own = {"Host": "smsrent.example.com"}
    cases = {
        "own origin": {**own, "Origin": "https://smsrent.example.com"},
        "own origin and port": {**own, "Origin": "http://smsrent.example.com:8000"},
        "look-alike host": {"Host": "smsrent.example.com.evil.example"},
        "foreign origin": {**own, "Origin": "https://evil.example"},
        "look-alike origin": {**own, "Origin": "https://smsrent.example.com.evil.example"},
        "opaque origin": {**own, "Origin": "null"},
    }
    async with served(app, "smsrent.example.com") as base:
        answers = await statuses(base, cases, AUTH)
    assert answers == {
        "own origin": 200,
        "own origin and port": 200,
        "look-alike host": 421,
        "foreign origin": 403,
        "look-alike origin": 403,
        "opaque origin": 403,
    }


# -- Getatext webhook ---------------------------------------------------------------------------------------


async def test_webhook_refuses_near_misses_of_its_secret(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """A real push on a path close to the secret one is not processed (no cross-check with the provider); the
    same push on the exact path is."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    near_misses = {
        "prefix": SECRET[:-1],
        "longer": f"{SECRET}0",
        "upper case": SECRET.upper(),
        "extra segment": f"{SECRET}/x",
        "trailing slash": f"{SECRET}/",
    }
    async with served(app) as base, Client(f"{base}/mcp") as client, httpx.AsyncClient() as http:
        rental = await rent_getatext(client)
        getatext_sandbox.deliver(int(local_id(rental["rental_id"])), "004521")
        push = push_body(rental, 4521)
        before = len(getatext_sandbox.requests)
        answers = {
            name: (await http.post(f"{base}/webhooks/getatext/{path}", json=push)).status_code
            for name, path in near_misses.items()
        }
        provider_calls = len(getatext_sandbox.requests) - before
        exact = await http.post(f"{base}/webhooks/getatext/{SECRET}", json=push)
    # Starlette redirects the trailing slash to the exact path without running the route: nothing is processed.
    assert answers == {"prefix": 404, "longer": 404, "upper case": 404, "extra segment": 404, "trailing slash": 307}
    assert provider_calls == 0
    assert exact.status_code == 200
    assert exact.json() == {"ok": True}

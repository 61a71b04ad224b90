"""The streamable HTTP transport served by uvicorn on loopback: `/mcp` on both eras, `/healthz`, the bearer
token, the non-loopback refusal, DNS-rebinding protection, and the Getatext webhook route."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, MCPError

from smsrent.mcp.app import App
from smsrent.mcp.http import http_app
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import PROTOCOL, fails, local_id, ok, rent_getatext, rent_gotsms, text_of, wait_while
from tests.mcp.served import INITIALIZE, MCP_HEADERS, SECRET, TOKEN, authorized, hook_app, push_body, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def mcp_errors(group: BaseException) -> list[MCPError]:
    """The MCPErrors inside a (nested) exception group."""
    if isinstance(group, MCPError):
        return [group]
    if isinstance(group, BaseExceptionGroup):
        return [e for inner in group.exceptions for e in mcp_errors(inner)]
    return []


# -- /mcp on both eras --------------------------------------------------------------------------------------


async def test_tools_over_http(app: App, mode: str, gotsms_sandbox: GotSmsSandbox) -> None:
    async with served(app) as base, Client(f"{base}/mcp", mode=mode) as client:
        assert client.protocol_version == PROTOCOL[mode]
        balance = await ok(client, "get_balance")
        assert {b["provider"] for b in balance["balances"]} == {"gotsms", "getatext"}

        rental = await rent_gotsms(client)
        seen: list[str | None] = []

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(message)

        rent_id = local_id(rental["rental_id"])
        result = await wait_while(
            client,
            rental["rental_id"],
            lambda: gotsms_sandbox.deliver(rent_id, "Your code is 012345", "012345"),
            progress=progress,
        )
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        assert result.structured_content["outcome"] == "code_received"
        assert result.structured_content["code"] == "012345"
        assert seen
        assert seen[0] is not None  # progress travels over SSE too


async def test_resources_over_http(app: App, mode: str) -> None:
    async with served(app) as base, Client(f"{base}/mcp", mode=mode) as client:
        rental = await rent_getatext(client)
        result = await client.read_resource(f"smsrent://rentals/{rental['rental_id']}")
        assert rental["rental_id"] in str(result.contents[0])
        with pytest.raises(MCPError):
            await client.read_resource("smsrent://rentals/getatext:1%2F2")


async def test_healthz_answers_json(app: App) -> None:
    async with served(app) as base, httpx.AsyncClient() as http:
        response = await http.get(f"{base}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["providers"] == {"gotsms": {"sandbox": True}, "getatext": {"sandbox": True}}
    assert body["version"]


# -- Bearer token -------------------------------------------------------------------------------------------


@pytest.fixture
def token_app(tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox) -> App:
    return sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN)


async def test_token_is_required_on_mcp(token_app: App, gotsms_sandbox: GotSmsSandbox) -> None:
    async with served(token_app) as base, httpx.AsyncClient() as http:
        bare = await http.post(f"{base}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        wrong = await http.post(
            f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer not-the-token"}
        )
        raw_token = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": TOKEN})
        right = await http.post(
            f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        )
        lower_scheme = await http.post(
            f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"bearer {TOKEN}"}
        )
        health = await http.get(f"{base}/healthz")
        health_with_token = await http.get(f"{base}/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    for refused in (bare, wrong, raw_token):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == (
            'Bearer error="invalid_token", error_description="Authentication required"'
        )  # no resource_metadata: without an issuer there is no authorization server to point to
        assert TOKEN not in refused.text
    assert right.status_code == 200
    assert lower_scheme.status_code == 200  # the scheme is case-insensitive
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}  # a probe learns the server is up, nothing else
    assert health_with_token.status_code == 200
    assert set(health_with_token.json()) == {"status", "version", "database", "providers", "polls", "tasks"}
    assert health_with_token.json()["database"] == "ok"
    assert gotsms_sandbox.requests == []


async def test_sdk_client_without_the_token_cannot_connect(token_app: App) -> None:
    async with served(token_app) as base:
        with pytest.raises(BaseException) as raised:  # noqa: PT011 - the SDK raises a nested ExceptionGroup
            async with Client(f"{base}/mcp"):
                pass
        assert mcp_errors(raised.value), raised.value
        with pytest.raises(BaseException) as raised:  # noqa: PT011
            async with authorized(base, token="wrong-token"):
                pass
        assert mcp_errors(raised.value), raised.value


async def test_sdk_client_with_the_token_works_on_both_eras(token_app: App) -> None:
    async with served(token_app) as base:
        for mode, version in PROTOCOL.items():
            async with authorized(base, mode) as client:
                assert client.protocol_version == version
                balance = await ok(client, "get_balance", provider="gotsms")
                assert balance["balances"][0]["provider"] == "gotsms"
                assert balance["sandbox"] is True


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "smsrent.example.com"])
def test_non_loopback_bind_without_token_is_refused(app: App, host: str) -> None:
    with pytest.raises(ValueError, match="SMSRENT_HTTP_TOKEN"):
        http_app(app, host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_bind_needs_the_host_names_clients_use(token_app: App, host: str) -> None:
    with pytest.raises(ValueError, match="SMSRENT_HTTP_ALLOWED_HOSTS"):
        http_app(token_app, host)


async def test_wildcard_bind_accepts_the_allowed_host_names_only(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    allowed = ("smsrent.example.org", "192.168.1.20")
    wildcard = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN, http_allowed_hosts=allowed)
    asgi = http_app(wildcard, "0.0.0.0")
    async with serve_loopback(asgi) as base, httpx.AsyncClient() as http:
        auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        answers = {
            name: (await http.post(f"{base}/mcp", json=INITIALIZE, headers={**auth, "Host": name})).status_code
            for name in ("smsrent.example.org", "192.168.1.20:8000", "0.0.0.0:8000", "evil.example")
        }
    assert answers == {"smsrent.example.org": 200, "192.168.1.20:8000": 200, "0.0.0.0:8000": 421, "evil.example": 421}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_loopback_bind_needs_no_token(app: App, host: str) -> None:
    assert callable(http_app(app, host))


# -- DNS-rebinding protection -------------------------------------------------------------------------------


async def test_foreign_host_header_is_refused(app: App) -> None:
    async with served(app) as base, httpx.AsyncClient() as http:
        evil = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"})
        evil_origin = await http.post(
            f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "http://evil.example"}
        )
        fine = await http.post(f"{base}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert evil.status_code == 421
    assert evil_origin.status_code == 403
    assert fine.status_code == 200


async def test_non_loopback_bind_allows_only_its_own_host(token_app: App) -> None:
    async with served(token_app, "smsrent.example.com") as base, httpx.AsyncClient() as http:
        auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        evil = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**auth, "Host": "evil.example"})
        own = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**auth, "Host": "smsrent.example.com:8000"})
    assert evil.status_code == 421
    assert own.status_code == 200


# -- Getatext webhook ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [(), ("127.0.0.1",)], ids=["any-sender", "allowlisted"])
async def test_webhook_push_wakes_the_wait_with_leading_zeros(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    mode: str,
    allowed: tuple[str, ...],
) -> None:
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox, webhook_allowed_ips=allowed)
    assert app.webhook_secret is not None
    assert app.webhook_secret.get_secret_value() == SECRET
    async with served(app) as base, Client(f"{base}/mcp", mode=mode) as client, httpx.AsyncClient() as http:
        rental = await rent_getatext(client)
        answers: list[httpx.Response] = []

        async def arrive() -> None:
            getatext_sandbox.deliver(int(local_id(rental["rental_id"])), "004521")
            answers.append(await http.post(f"{base}/webhooks/getatext/{SECRET}", json=push_body(rental, 4521)))

        async with anyio.create_task_group() as tg:
            result = await wait_while(
                client, rental["rental_id"], lambda: tg.start_soon(arrive), after=0.5, timeout_seconds=10
            )
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"ok": True})]
    assert not result.is_error, text_of(result)
    out = result.structured_content
    assert out is not None
    assert out["outcome"] == "code_received"
    assert out["code"] == "004521"  # cross-checked with rental-status, not the pushed 4521
    assert out["waited_seconds"] < 5  # woken by the push, not by a slow poll
    assert any(path == "/api/v1/rental-status" for _, _, path in getatext_sandbox.requests)


async def test_webhook_refuses_a_wrong_secret(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    body = {"id": 12346, "code": 4521}
    async with served(app) as base, httpx.AsyncClient() as http:
        wrong = await http.post(f"{base}/webhooks/getatext/not-{SECRET}", json=body)
        empty = await http.post(f"{base}/webhooks/getatext/", json=body)
        get = await http.get(f"{base}/webhooks/getatext/{SECRET}")
    assert wrong.status_code == 404
    assert SECRET not in wrong.text
    assert empty.status_code == 404
    assert get.status_code == 405
    assert getatext_sandbox.requests == []


async def test_webhook_without_a_configured_secret_is_closed(app: App, getatext_sandbox: GetatextSandbox) -> None:
    assert app.webhook_secret is None
    async with served(app) as base, httpx.AsyncClient() as http:
        answer = await http.post(f"{base}/webhooks/getatext/anything", json={"id": 12346, "code": 1})
    assert answer.status_code == 404
    assert getatext_sandbox.requests == []


async def test_webhook_refuses_a_sender_not_allowlisted(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox, webhook_allowed_ips=("104.198.170.54",))
    async with served(app) as base, Client(f"{base}/mcp") as client, httpx.AsyncClient() as http:
        rental = await rent_getatext(client)
        before = len(getatext_sandbox.requests)
        answer = await http.post(f"{base}/webhooks/getatext/{SECRET}", json=push_body(rental, 4521))
        after = len(getatext_sandbox.requests)
        messages = await ok(client, "get_messages", rental_id=rental["rental_id"])
    assert answer.status_code == 403
    assert after == before  # refused before the cross-check with rental-status
    assert messages["count"] == 0  # nothing was stored


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"id": 12346, "code":',
        b"[1, 2]",
        b'{"id": 12346}',
        b'{"code": 4521}',
        b'{"id": "../x", "code": 1}',
    ],
    ids=["text", "truncated", "array", "no-code", "no-id", "bad-id"],
)
async def test_webhook_refuses_a_malformed_body(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, content: bytes
) -> None:
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with served(app) as base, httpx.AsyncClient() as http:
        answer = await http.post(
            f"{base}/webhooks/getatext/{SECRET}", content=content, headers={"Content-Type": "application/json"}
        )
        health = await http.get(f"{base}/healthz")
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert health.status_code == 200  # still up
    assert getatext_sandbox.requests == []


async def test_webhook_for_an_unknown_rental(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with served(app) as base, httpx.AsyncClient() as http:
        answer = await http.post(f"{base}/webhooks/getatext/{SECRET}", json={"id": 999, "code": 1234})
    assert answer.status_code == 404
    assert getatext_sandbox.requests == []


async def test_a_re_rent_whose_answer_was_lost_is_adopted_by_a_push_and_usable_through_the_tools(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, mode: str
) -> None:
    """Getatext re-rents the number but the answer is lost: the purchase is counted at its max_price without a
    rental id. The new rental's first pushed code names it; it is adopted (the purchase gets its id and real
    price), and every tool works on it."""
    app = hook_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with served(app) as base, Client(f"{base}/mcp", mode=mode) as client, httpx.AsyncClient() as http:
        old = await rent_getatext(client)
        await ok(client, "finish_rental", rental_id=old["rental_id"])
        getatext_sandbox.inject("POST", "/api/v1/re-rent", "commit_then_500")
        error = await fails(client, "extend_rental", rental_id=old["rental_id"], max_price="1")
        assert "counted at its max_price 1.00 until its rental is found" in error
        new = max(getatext_sandbox.rentals)
        rental_id = f"getatext:{new}"
        getatext_sandbox.deliver(new, "004521")
        pushed = await http.post(f"{base}/webhooks/getatext/{SECRET}", json={"id": new, "code": 4521})
        waited = await ok(client, "wait_for_code", rental_id=rental_id, timeout_seconds=2)
        messages = await ok(client, "get_messages", rental_id=rental_id)
        listed = await ok(client, "list_rentals", status="all")
        finished = await ok(client, "finish_rental", rental_id=rental_id)
    assert (pushed.status_code, pushed.json()) == (200, {"ok": True})
    assert (waited["outcome"], waited["code"]) == ("code_received", "004521")
    assert messages["count"] == 1
    assert {r["rental_id"] for r in listed["rentals"]} == {old["rental_id"], rental_id}
    assert finished["rental"]["status"] == "completed"
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        rows = db.execute("SELECT source_rental_id, rental_id, price, verified FROM purchases").fetchall()
    assert rows == [(None, old["rental_id"], "0.55", 1), (old["rental_id"], rental_id, "0.55", 1)]

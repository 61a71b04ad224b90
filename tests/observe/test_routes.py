"""The owner's HTTP routes: who may read `/metrics` and `/dashboard/data`, the public static page and its headers,
credentials in query strings refused everywhere, and what the dashboard's data says after a purchase."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from smsrent.mcp.http import http_app
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import local_id, rent_gotsms, wait_while
from tests.observe import AUTH, CAPS, CODE, SMS_TEXT, TOKEN, http_client, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CSP = "default-src 'self'; frame-ancestors 'none'"
STATIC = {
    "/dashboard": "text/html",
    "/dashboard/dashboard.js": "text/javascript",
    "/dashboard/dashboard.css": "text/css",
    "/dashboard/favicon.svg": "image/svg+xml",
}
OWNER_ROUTES = ("/metrics", "/dashboard/data")


async def test_without_an_owner_token_the_owner_routes_say_to_set_one(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with serve_loopback(http_app(app, "127.0.0.1")) as base, httpx.AsyncClient(base_url=base) as http:
        for route in OWNER_ROUTES:
            for headers in ({}, {"Authorization": "Bearer anything"}):
                answer = await http.get(route, headers=headers)
                assert answer.status_code == 403, route
                assert answer.json()["detail"] == (
                    f"{route} needs the owner's credential: start the server with SMSRENT_HTTP_TOKEN set and send"
                    " Authorization: Bearer <SMSRENT_HTTP_TOKEN>."
                )
        page = await http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP


async def test_static_page_and_assets_are_public_with_a_strict_policy(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with (
        served(tmp_path, gotsms_sandbox, getatext_sandbox) as (_, base),
        httpx.AsyncClient(base_url=base) as http,
    ):
        answers = {path: await http.get(path) for path in STATIC}
        elsewhere = await http.get("/dashboard/other")
    for path, media in STATIC.items():
        answer = answers[path]
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].split(";")[0] == media
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert TOKEN not in answer.text
    page = answers["/dashboard"].text
    assert "<script>" not in page  # no inline script: the policy would block it
    assert "style=" not in page
    assert 'src="/dashboard/dashboard.js"' in page
    script = answers["/dashboard/dashboard.js"].text
    assert "innerHTML" not in script
    assert "outerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert elsewhere.status_code == 404  # only the listed files are served


@pytest.mark.parametrize(
    ("path", "headers", "query", "status"),
    [
        ("/metrics", {}, {}, 401),
        ("/metrics", {"Authorization": "Bearer wrong"}, {}, 401),
        ("/metrics", {}, {"token": TOKEN}, 400),
        ("/metrics", AUTH, {}, 200),
        ("/metrics", AUTH, {"token": TOKEN}, 400),
        ("/metrics", AUTH, {"t": TOKEN}, 400),
        ("/dashboard/data", {}, {}, 401),
        ("/dashboard/data", {}, {"access_token": TOKEN}, 400),
        ("/dashboard/data", AUTH, {}, 200),
        ("/dashboard/data", AUTH, {"access_token": "x"}, 400),
        ("/dashboard", {}, {"token": TOKEN}, 400),
        ("/dashboard/dashboard.js", {}, {"api_key": "x"}, 400),
        ("/healthz", AUTH, {"Authorization": TOKEN}, 400),
        ("/healthz", AUTH, {"since": "24h"}, 200),
    ],
)
async def test_credentials_only_in_the_header(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    path: str,
    headers: dict[str, str],
    query: dict[str, str],
    status: int,
) -> None:
    async with (
        served(tmp_path, gotsms_sandbox, getatext_sandbox) as (_, base),
        httpx.AsyncClient(base_url=base) as http,
    ):
        answer = await http.get(path, headers=headers, params=query)
    assert answer.status_code == status, answer.text
    assert TOKEN not in answer.text
    if status == 400:
        assert answer.json() == {
            "error": "credential in URL",
            "detail": "credentials are refused in the query string; send Authorization: Bearer <credential>"
            " instead, and change the credential if this URL was shared or logged",
        }


async def test_mcp_refuses_a_credential_in_the_query_string_even_with_the_header(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with (
        served(tmp_path, gotsms_sandbox, getatext_sandbox) as (_, base),
        httpx.AsyncClient(base_url=base) as http,
    ):
        answer = await http.post("/mcp", json=ping, headers=AUTH, params={"access_token": TOKEN})
    assert answer.status_code == 400


async def test_dashboard_data_after_a_purchase_and_a_code(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with served(tmp_path, gotsms_sandbox, getatext_sandbox, **CAPS) as (_, base):
        async with http_client(base) as client:
            rental = await rent_gotsms(client)
            rent_id = local_id(rental["rental_id"])
            await wait_while(client, rental["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, SMS_TEXT, CODE))
        async with httpx.AsyncClient(base_url=base) as http:
            answer = await http.get("/dashboard/data", headers=AUTH)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    data = answer.json()
    assert data["sandbox"] is False  # the providers were given, not the built-in sandbox
    assert data["budget"] == {"daily": "10.00", "committed": "1.00", "remaining": "9.00"}
    assert data["spend"]["net"] == "1.00"
    assert [p["net"] for p in data["spend"]["points"]] == ["0", "1.00"]
    assert data["agents"] == [{"agent": "owner", "spent": "1.00", "refunded": "0.00", "net": "1.00"}]
    assert data["rentals"] == {"code_received": 1, "refunded": 0, "expired_without_code": 0, "active": 0}
    (active,) = data["active"]
    assert active["rental_id"] == rental["rental_id"]
    assert active["phone"] == rental["phone"]
    assert active["agent"] == "owner"  # whose it is (the owner's: no agents here)
    assert active["ends_at"] > data["now"]
    (message,) = data["messages"]
    assert message == {
        "rental_id": rental["rental_id"],
        "received_at": message["received_at"],
        "from": "+18001234567",
        "code": CODE,
        "text": SMS_TEXT,
    }
    assert data["delivery"]["count"] == 1
    assert data["delivery"]["p50"] == data["delivery"]["p95"] == data["delivery"]["recent"][0] >= 0
    assert data["waiters"] == 0

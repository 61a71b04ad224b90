"""Replicas on one PostgreSQL ledger: three real `smsrent-mcp --http` processes with data dirs of their own and one
database, their real adapters pointed at one GotSMS sandbox on loopback with credentials (not sandbox mode).
The daily budget holds across them under 50 concurrent purchases, an uncertain purchase made on one blocks
purchases on the others until it is settled, and the start refuses in one line: an older schema (naming
`smsrent-mcp migrate`, which fixes it), the sandbox with a database URL, an unreachable database."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
import pytest
from anyio.abc import Process
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger.postgres.migrations import MIGRATIONS
from tests.e2e.process import command, free_port, server_env
from tests.ledger.stores import PostgresStore
from tests.mcp import text_of
from tests.postgres import fresh_database

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.postgres]

RENTS = "/api/rents"
PASSWORD = "hunter2-not-shown"


class ListingOutage:
    """The GotSMS sandbox, except that while `down` its rent list (GET /api/rents) answers 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.down = app, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.down and scope["type"] == "http" and (scope["method"], scope["path"]) == ("GET", RENTS):
            await JSONResponse({"message": "Service Unavailable"}, status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class Served:
    """One running `smsrent-mcp --http` process and its base URL."""

    base: str
    process: Process


@dataclass
class Replicas:
    clients: list[Client]
    sandbox: GotSmsSandbox
    store: PostgresStore
    logs: list[Path]
    servers: list[Served]

    def rent_posts(self) -> int:
        return sum(1 for _, method, path in self.sandbox.requests if (method, path) == ("POST", RENTS))


def day_plan(sandbox: GotSmsSandbox) -> tuple[str, Decimal]:
    """The cheapest daily GotSMS plan: its plan_id and price."""
    plan = min((p for p in sandbox.plans.values() if p.duration_type == "day"), key=lambda p: p.price)
    return f"gotsms:{plan.id}", plan.price


@asynccontextmanager
async def server(env: dict[str, str], log: Path) -> AsyncIterator[Served]:
    """One `smsrent-mcp --http` process, once its /healthz says ok."""
    port = free_port()
    with log.open("wb") as stderr:
        process = await anyio.open_process([command(), "--http", "--port", str(port)], env=env, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    async with process:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                with anyio.fail_after(30):
                    while not await healthy(http, base):
                        if process.returncode is not None:
                            raise AssertionError(await anyio.Path(log).read_text())
                        await anyio.sleep(0.05)
            yield Served(base, process)
        finally:
            with suppress(ProcessLookupError):  # a test may have killed it
                process.terminate()
            with anyio.fail_after(20):
                await process.wait()


@asynccontextmanager
async def connect(served: Served) -> AsyncIterator[Client]:
    """An MCP client of the server over streamable HTTP."""
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(f"{served.base}/mcp", http_client=http)) as client,
    ):
        yield client


async def healthy(http: httpx.AsyncClient, base: str) -> bool:
    try:
        return bool((await http.get(f"{base}/healthz")).json()["status"] == "ok")
    except httpx.HTTPError:
        return False


@asynccontextmanager
async def replicas(
    tmp_path: Path, database_url: SecretStr, sandbox: GotSmsSandbox, app: ASGIApp, **env: str
) -> AsyncIterator[Replicas]:
    async with serve_loopback(app) as provider, AsyncExitStack() as stack:
        logs, clients, servers = [], [], []
        for n in range(3):
            data_dir, log = tmp_path / f"replica-{n}", tmp_path / f"replica-{n}.log"
            replica_env = server_env(
                data_dir,
                SMSRENT_DATABASE_URL=database_url.get_secret_value(),
                GOTSMS_API_TOKEN=sandbox.token,
                GOTSMS_BASE_URL=f"{provider}/api",
                SMSRENT_LOG_LEVEL="INFO",
                **env,
            )
            served = await stack.enter_async_context(server(replica_env, log))
            servers.append(served)
            clients.append(await stack.enter_async_context(connect(served)))
            logs.append(log)
        yield Replicas(clients, sandbox, PostgresStore(database_url), logs, servers)


async def test_fifty_purchases_over_three_replicas_buy_exactly_what_the_budget_fits(
    tmp_path: Path, database_url: SecretStr, gotsms_sandbox: GotSmsSandbox
) -> None:
    plan_id, price = day_plan(gotsms_sandbox)
    funds = gotsms_sandbox.balance
    budget = str(10 * price)
    async with replicas(tmp_path, database_url, gotsms_sandbox, gotsms_sandbox.app, SMSRENT_DAILY_BUDGET=budget) as r:
        results: list[tuple[bool, str]] = []

        async def buy(client: Client) -> None:
            result = await client.call_tool("rent_number", {"plan_id": plan_id, "max_price": str(price)})
            results.append((bool(result.is_error), text_of(result)))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(buy, r.clients[n % 3])
        bought = await r.store.execute("SELECT rental_id, price FROM purchases WHERE state = 'bought'")
        others = await r.store.execute("SELECT count(*) FROM purchases WHERE state <> 'bought'")
    refusals = [text for failed, text in results if failed]
    assert len(results) == 50
    assert len(refusals) == 40
    assert all("SMSRENT_DAILY_BUDGET" in text for text in refusals), refusals[:3]
    assert len(bought) == 10
    assert others == [(0,)]
    assert r.rent_posts() == 10 == len(gotsms_sandbox.rents)
    assert sorted(str(rental_id) for rental_id, _ in bought) == sorted(
        f"gotsms:{rent}" for rent in gotsms_sandbox.rents
    )
    assert sum(Decimal(str(p)) for _, p in bought) == funds - gotsms_sandbox.balance == 10 * price


async def test_an_uncertain_purchase_on_one_replica_blocks_the_others_until_it_is_settled(
    tmp_path: Path, database_url: SecretStr, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Replica A's rent reaches GotSMS and the answer never comes; the rent list is down, so nothing settles it.
    B and C refuse to buy on GotSMS (nothing reaches the provider); once the list is back, B's next purchase
    first settles A's (found: bought), then buys."""
    outage = ListingOutage(gotsms_sandbox.app)
    timeouts = {"SMSRENT_PROVIDER_TIMEOUT": "2", "SMSRENT_SETTLE_AFTER": "4"}
    async with replicas(tmp_path, database_url, gotsms_sandbox, outage, **timeouts) as r:
        plan_id, price = day_plan(gotsms_sandbox)
        a, b, c = r.clients
        args = {"plan_id": plan_id, "max_price": str(price)}
        outage.down = True
        gotsms_sandbox.inject("POST", RENTS, "commit_then_hang")
        with anyio.fail_after(60):
            lost = await a.call_tool("rent_number", args)
            refused = [await client.call_tool("rent_number", args) for client in (b, c)]
        states = await r.store.execute("SELECT state FROM purchases ORDER BY purchase_id")
        posts_while_unsettled = r.rent_posts()

        outage.down = False
        with anyio.fail_after(60):
            after = await b.call_tool("rent_number", args)
        settled = await r.store.execute("SELECT state, rental_id, note FROM purchases ORDER BY purchase_id")
    assert lost.is_error
    assert "may or may not have gone through" in text_of(lost)
    assert all(result.is_error for result in refused)
    assert all("unknown outcome" in text_of(result) for result in refused)
    assert states == [("uncertain",)]
    assert posts_while_unsettled == 1
    assert not after.is_error, text_of(after)
    first, second = (f"gotsms:{rent}" for rent in gotsms_sandbox.rents)  # in the order GotSMS made them
    assert [(state, rental_id) for state, rental_id, _ in settled] == [("bought", first), ("bought", second)]
    assert settled[0][2] == "reconciled"
    assert r.rent_posts() == 2


# -- Refusals at start ---------------------------------------------------------------------------------------


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command(), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def with_password(url: SecretStr) -> tuple[str, str]:
    """The database URL with a password the server must never show, and that password: the URL's own, or one put in
    (a server on trust ignores it)."""
    parts = urlsplit(url.get_secret_value())
    if parts.password:
        return url.get_secret_value(), parts.password
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return parts._replace(netloc=netloc).geturl(), PASSWORD


async def test_a_replica_refuses_an_older_schema_naming_migrate_and_migrate_fixes_it(tmp_path: Path) -> None:
    with fresh_database() as url:
        url_with_password, password = with_password(url)
        env = server_env(
            tmp_path,
            SMSRENT_DATABASE_URL=url_with_password,
            GOTSMS_API_TOKEN="unused",
            GOTSMS_BASE_URL="http://127.0.0.1:9/api",
        )
        line = refusal(run(["--http", "--port", str(free_port())], env))
        assert "is at schema version 0" in line
        assert "run `smsrent-mcp migrate`" in line
        migrated = run(["migrate"], env)
        again = run(["migrate"], env)
        async with server(env, tmp_path / "server.log") as served, httpx.AsyncClient() as http:
            health: dict[str, Any] = (await http.get(f"{served.base}/healthz")).json()
    assert migrated.returncode == 0, migrated.stderr
    assert f"from schema version 0 to {len(MIGRATIONS)}" in migrated.stdout
    assert "nothing to migrate" in again.stdout
    assert health["status"] == "ok"
    for output in (line, migrated.stdout, again.stdout, (tmp_path / "server.log").read_text()):
        assert password not in output


@pytest.mark.parametrize("sandbox", [False, True])
def test_the_sandbox_with_a_database_url_is_refused(tmp_path: Path, sandbox: bool) -> None:
    """No credentials (the sandbox would serve) or --sandbox: each replica would simulate a provider of its own."""
    credentials = {"GOTSMS_API_TOKEN": "set", "SMSRENT_SANDBOX": "1"} if sandbox else {}
    env = server_env(tmp_path, SMSRENT_DATABASE_URL=f"postgresql://root:{PASSWORD}@127.0.0.1:9/ledger", **credentials)
    line = refusal(run([], env))
    assert line.startswith("smsrent-mcp: SMSRENT_DATABASE_URL cannot be used with the sandbox: ")
    assert ("the sandbox is on" if sandbox else "no provider credentials are set") in line
    assert PASSWORD not in line


def test_an_unreachable_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = server_env(
        tmp_path,
        SMSRENT_DATABASE_URL=f"postgresql://smsrent:{PASSWORD}@127.0.0.1:9/ledger",
        GOTSMS_API_TOKEN="unused",
    )
    line = refusal(run(["--http", "--port", str(free_port())], env))
    assert line.startswith("smsrent-mcp: cannot connect to the PostgreSQL ledger (database ledger on 127.0.0.1:9): ")
    assert PASSWORD not in line

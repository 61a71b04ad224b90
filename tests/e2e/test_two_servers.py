"""Two real `smsrent-mcp` processes on one data dir and one webhook port (Claude Desktop and Claude Code started
without SMSRENT_DATA_DIR), their credentials pointing at one pair of sandboxes on loopback: both start and serve,
the daily budget holds across them, Getatext purchases never overlap at the provider, a server starting while
the other buys leaves that purchase alone, and what a SIGKILLed server left mid-purchase is settled by the other.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.e2e.process import command, free_port, server_env
from tests.mcp import ok, rent_gotsms, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

D = Decimal
RENTS = "/api/rents"
MESSAGES = "/api/messages"
GETATEXT_RENT = "/api/v1/rent-a-number"
UBER = {"plan_id": "getatext:uber", "max_price": "0.20"}


@dataclass
class Server:
    client: Client
    pidfile: Path
    log: Path

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@dataclass
class World:
    data_dir: Path
    env: dict[str, str]
    gotsms: GotSmsSandbox
    getatext: GetatextSandbox

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.data_dir / "ledger.sqlite3")) as db:
            return db.execute(sql).fetchall()

    @asynccontextmanager
    async def server(self, name: str) -> AsyncIterator[Server]:
        """A server process; its pid and stderr go to files in the data dir's parent."""
        pidfile, log = self.data_dir.parent / f"{name}.pid", self.data_dir.parent / f"{name}.log"
        script = f'echo $$ > "{pidfile}"; exec "{command()}" 2>>"{log}"'
        async with Client(StdioServerParameters(command="/bin/sh", args=["-c", script], env=self.env)) as client:
            yield Server(client, pidfile, log)


@asynccontextmanager
async def world(tmp_path: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, **env: str) -> AsyncIterator[World]:
    """Both sandboxes on loopback; one data dir, one webhook port and secret for every server."""
    async with serve_loopback(gotsms.app) as gotsms_url, serve_loopback(getatext.app) as getatext_url:
        yield World(
            tmp_path / "data",
            server_env(
                tmp_path / "data",
                GOTSMS_API_TOKEN=gotsms.token,
                GOTSMS_BASE_URL=f"{gotsms_url}/api",
                GETATEXT_API_KEY=getatext.api_key,
                GETATEXT_BASE_URL=getatext_url,
                SMSRENT_WEBHOOK_PORT=str(free_port()),
                SMSRENT_WEBHOOK_SECRET="two-servers-secret",
                SMSRENT_LOG_LEVEL="INFO",
                **env,
            ),
            gotsms,
            getatext,
        )


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


def day_plan(sandbox: GotSmsSandbox) -> tuple[str, Decimal]:
    plan = min((p for p in sandbox.plans.values() if p.duration_type == "day"), key=lambda p: p.price)
    return f"gotsms:{plan.id}", plan.price


def rent_posts(sandbox: GotSmsSandbox) -> int:
    return sum(1 for _, method, path in sandbox.requests if (method, path) == ("POST", RENTS))


async def test_both_start_and_serve_on_one_webhook_port_and_the_daily_budget_holds_across_them(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """Ten purchases race through two servers under a budget that fits five: five are bought, and the provider's
    rents are exactly the ledger's. The second server cannot bind the webhook port: it says so and serves."""
    plan_id, price = day_plan(gotsms_sandbox)
    funds = gotsms_sandbox.balance
    async with world(tmp_path, gotsms_sandbox, getatext_sandbox, SMSRENT_DAILY_BUDGET=str(5 * price)) as w:
        async with w.server("a") as a, w.server("b") as b:
            results: list[tuple[bool, str]] = []

            async def buy(server: Server) -> None:
                result = await server.client.call_tool("rent_number", {"plan_id": plan_id, "max_price": str(price)})
                results.append((bool(result.is_error), text_of(result)))

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n in range(10):
                        tg.start_soon(buy, a if n % 2 else b)
            balances = [await ok(s.client, "get_balance") for s in (a, b)]
            logs = [a.stderr(), b.stderr()]
        bought = w.query("SELECT rental_id, price FROM purchases WHERE state = 'bought'")
    refusals = [text for failed, text in results if failed]
    assert len(bought) == 5 == len(results) - len(refusals)
    assert all("SMSRENT_DAILY_BUDGET" in text for text in refusals)
    assert sorted(r for r, _ in bought) == sorted(f"gotsms:{rent}" for rent in gotsms_sandbox.rents)
    assert sum(D(p) for _, p in bought) == funds - gotsms_sandbox.balance == 5 * price
    assert rent_posts(gotsms_sandbox) == 5
    assert all(len(balance["balances"]) == 2 for balance in balances)
    port = w.env["SMSRENT_WEBHOOK_PORT"]
    taken = [log for log in logs if f"webhook port {port} is taken" in log]
    assert len(taken) == 1
    assert sum("Getatext webhook listener on" in log for log in logs) == 1


async def test_getatext_purchases_through_two_servers_never_overlap_at_the_provider(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    getatext_sandbox.slow_seconds = 0.3  # each rent takes a while: two at once would overlap
    getatext_sandbox.inject("POST", GETATEXT_RENT, "slow", times=8)
    funds = getatext_sandbox.balance
    async with world(tmp_path, gotsms_sandbox, getatext_sandbox) as w:
        async with w.server("a") as a, w.server("b") as b:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n in range(8):
                        tg.start_soon(partial(ok, (a if n % 2 else b).client, "rent_number", **UBER))
        bought = w.query("SELECT rental_id, price FROM purchases WHERE state = 'bought'")
    spans = sorted((start, end) for start, end, _, path in getatext_sandbox.spans if path == GETATEXT_RENT)
    assert len(spans) == 8
    assert all(end <= following for (_, end), (following, _) in itertools.pairwise(spans))
    assert sorted(r for r, _ in bought) == sorted(f"getatext:{rental}" for rental in getatext_sandbox.rentals)
    assert sum(D(p) for _, p in bought) == funds - getatext_sandbox.balance == D("1.60")


async def test_a_server_starting_while_the_other_buys_does_not_settle_that_purchase(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """Start-up recovery took every reserved purchase for its own crash and made the other server's purchase in
    flight uncertain (then reconciliation could settle it before the provider showed it)."""
    plan_id, price = day_plan(gotsms_sandbox)
    gotsms_sandbox.slow_seconds = 8.0  # the provider takes 8 s to rent (within the 20 s timeout)
    gotsms_sandbox.inject("POST", RENTS, "slow")
    async with world(tmp_path, gotsms_sandbox, getatext_sandbox) as w, w.server("a") as a:
        bought: dict[str, Any] = {}

        async def buy() -> None:
            bought.update(await ok(a.client, "rent_number", plan_id=plan_id, max_price=str(price)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(buy)
            await until(lambda: rent_posts(gotsms_sandbox) == 1)
            async with w.server("b") as b:
                listed = await ok(b.client, "list_rentals")
                while_in_flight = w.query("SELECT state, note FROM purchases")
        after = w.query("SELECT state, rental_id FROM purchases")
    assert while_in_flight == [("reserved", None)]
    assert "stale" not in listed  # every provider answered the refresh
    (rent_id,) = gotsms_sandbox.rents
    assert after == [("bought", f"gotsms:{rent_id}")]
    assert bought["rental"]["rental_id"] == f"gotsms:{rent_id}"


async def test_what_a_killed_server_left_mid_purchase_is_settled_by_the_other(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """Server A is SIGKILLed after GotSMS made its rent but before the answer; server B, asked nothing, finds A
    gone (its pid ended) on a heartbeat and settles the purchase from the rent list."""
    plan_id, price = day_plan(gotsms_sandbox)
    gotsms_sandbox.inject("POST", RENTS, "commit_then_hang")
    async with world(tmp_path, gotsms_sandbox, getatext_sandbox) as w, w.server("b") as b:
        await ok(b.client, "get_balance")

        async def buy_and_die() -> None:
            async with w.server("a") as a:
                await a.client.call_tool("rent_number", {"plan_id": plan_id, "max_price": str(price)})

        async with anyio.create_task_group() as tg:
            tg.start_soon(buy_and_die)
            await until(lambda: gotsms_sandbox.commits == 1)
            os.kill(int((w.data_dir.parent / "a.pid").read_text()), signal.SIGKILL)
            tg.cancel_scope.cancel()
        assert w.query("SELECT state FROM purchases") == [("reserved",)]
        await until(lambda: w.query("SELECT state FROM purchases") == [("bought",)])
        stderr = b.stderr()
    (rent_id,) = gotsms_sandbox.rents
    [(rental_id, paid, owner)] = w.query("SELECT rental_id, price, owner FROM purchases")
    assert (rental_id, D(paid), owner) == (f"gotsms:{rent_id}", price, None)
    assert "took over 1 purchase(s) left unsettled by a server that stopped" in stderr


async def test_two_servers_poll_the_account_once_and_each_waiter_gets_its_code(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """A rental waits on each server: GotSMS's listing is read no more than one poller reads it (a tick a second at
    its fastest), and each waiter gets its code, whichever server polled it."""
    watched = 6.0
    async with world(tmp_path, gotsms_sandbox, getatext_sandbox) as w, w.server("a") as a, w.server("b") as b:
        rentals = [(await rent_gotsms(s.client))["rental_id"] for s in (a, b)]
        got: dict[str, Any] = {}

        async def wait(server: Server, rental_id: str) -> None:
            got[rental_id] = await ok(server.client, "wait_for_code", rental_id=rental_id, timeout_seconds=30)

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                for server, rental_id in zip((a, b), rentals, strict=True):
                    tg.start_soon(wait, server, rental_id)
                await anyio.sleep(1.0)  # both waits have started
                since = time.time()  # the sandbox stamps its requests with this clock
                await anyio.sleep(watched)
                reads = sum(1 for at, method, path in gotsms_sandbox.requests if path == MESSAGES and at >= since)
                for n, rental_id in enumerate(rentals):
                    gotsms_sandbox.deliver(rental_id.partition(":")[2], f"Your code is 55555{n}", f"55555{n}")
    assert reads <= watched + 2, reads  # one poller's worth: two would read about twice as often
    assert [(got[r]["outcome"], got[r]["code"]) for r in rentals] == [("code_received", f"55555{n}") for n in (0, 1)]

"""No background task can end the server: a non-provider exception in a poller, in start-up reconciliation, in the
heartbeat or in a sandbox's event loop is logged, retried after a back-off and shown in `/healthz`, while the tools
keep answering; the task works again once the fault stops; and shutting down still stops every task.

(Over real stdio, with a real locked ledger file: tests/e2e/test_supervised_stdio.py.)"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from smsrent.mcp.app import App, create_app
from smsrent.mcp.http import http_app
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.registry import Providers
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.supervisor import Supervisor
from tests.helpers import getatext_adapter, gotsms_adapter, settings
from tests.mcp import local_id, ok, rent_getatext, rent_gotsms

pytestmark = pytest.mark.anyio

ERRORS: dict[str, Callable[[], Exception]] = {
    "RuntimeError": lambda: RuntimeError("boom: +15550001111 said 424242"),
    "RecursionError": lambda: RecursionError("maximum recursion depth exceeded while decoding a JSON object"),
    "sqlite3.OperationalError": lambda: sqlite3.OperationalError("database is locked"),
    "MemoryError": MemoryError,
}
SECRET = "hook-secret-supervised"


class Fault:
    """Replaces an adapter method: while `on`, a call (for `only` that first argument, if given) raises a fresh
    `error()`; otherwise it does what it did."""

    def __init__(self, target: object, method: str, error: Callable[[], Exception], only: object = None) -> None:
        self.original = getattr(target, method)
        self.error, self.only = error, only
        self.on, self.raised = True, 0
        setattr(target, method, self.call)

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        if self.on and (self.only is None or args[0] == self.only):
            self.raised += 1
            raise self.error()
        return await self.original(*args, **kwargs)


def quick() -> Supervisor:
    """Back-offs of tens of milliseconds; recovered two seconds after the last failure (a poller ticks each second)."""
    return Supervisor(first_delay=0.02, max_delay=0.1, healthy_after=2.0)


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.02)


@pytest.fixture
async def adapters(
    gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> AsyncIterator[tuple[GotSmsProvider, GetatextProvider]]:
    """The adapters the app runs with, kept here so a test can break their methods."""
    gotsms, getatext = gotsms_adapter(gotsms_sandbox), getatext_adapter(getatext_sandbox)
    yield gotsms, getatext
    await gotsms.aclose()
    await getatext.aclose()


def app_over(tmp_path: Path, adapters: tuple[GotSmsProvider, GetatextProvider], *sandboxes: GetatextSandbox) -> App:
    """The app over both adapters (closed by the fixture, not the app); with a sandbox given, it runs the
    sandbox's event loop (pushes to the webhook) and keeps its ledger in memory, as sandbox mode does."""
    app = create_app(
        settings(tmp_path, webhook_secret=SECRET),
        providers=lambda: Providers(list(adapters), sandboxes=list(sandboxes)),
        supervisor=quick(),
    )
    return app


def failure_logs(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "smsrent.supervisor" and f"task {task} failed" in r.getMessage()]


@pytest.mark.parametrize("error", list(ERRORS))
async def test_the_gotsms_poller_survives_any_exception_and_delivers_once_it_stops(
    tmp_path: Path,
    adapters: tuple[GotSmsProvider, GetatextProvider],
    gotsms_sandbox: GotSmsSandbox,
    caplog: pytest.LogCaptureFixture,
    error: str,
) -> None:
    app = app_over(tmp_path, adapters)
    async with Client(app.mcp) as client:
        rental = await rent_gotsms(client)
        fault = Fault(adapters[0], "message_page", ERRORS[error])
        got: dict[str, Any] = {}

        async def wait() -> None:
            got.update(await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=40))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            gotsms_sandbox.deliver(local_id(rental["rental_id"]), "Your code is 135790", "135790")
            await until(lambda: fault.raised >= 3)  # the poller ran again after each failure
            balance = await ok(client, "get_balance", provider="gotsms")  # the server keeps answering
            health = app.supervisor.report()["poller:gotsms"]
            assert app.supervisor.degraded
            fault.on = False
        assert balance["balances"][0]["amount"]
        assert (got["outcome"], got["code"]) == ("code_received", "135790")
    assert health["state"] == "failing"
    assert isinstance(health["failures"], int)
    assert health["failures"] >= 3
    assert str(health["last_error"]).startswith(f"{error} at test_supervised.py:")
    assert "424242" not in str(health)
    (first, *_) = failure_logs(caplog, "poller:gotsms")
    assert first.levelno == logging.ERROR
    assert first.exc_info is not None
    assert type(first.exc_info[1]).__name__ == error.rpartition(".")[2]


@pytest.mark.parametrize("error", list(ERRORS))
async def test_one_getatext_rentals_failing_poll_and_push_stop_neither_the_others_nor_the_server(
    tmp_path: Path,
    adapters: tuple[GotSmsProvider, GetatextProvider],
    getatext_sandbox: GetatextSandbox,
    error: str,
) -> None:
    """A's status request raises (in the poller's per-rental task, and in the push the sandbox's event loop sends
    to the webhook); B's code still arrives, and A's does once the fault stops."""
    app = app_over(tmp_path, adapters, getatext_sandbox)
    async with Client(app.mcp) as client:
        a, b = await rent_getatext(client), await rent_getatext(client, "getatext:uber")
        fault = Fault(adapters[1], "rental_status", ERRORS[error], only=local_id(a["rental_id"]))
        got: dict[str, dict[str, Any]] = {}

        async def wait(rental: dict[str, Any]) -> None:
            waited = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=40)
            got[rental["rental_id"]] = waited

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, a)
            tg.start_soon(wait, b)
            getatext_sandbox.deliver(int(local_id(a["rental_id"])), "246801")
            getatext_sandbox.deliver(int(local_id(b["rental_id"])), "975310")
            await until(lambda: b["rental_id"] in got)
            await until(lambda: fault.raised >= 3)
            report = app.supervisor.report()
            assert a["rental_id"] not in got
            fault.on = False
    assert got[b["rental_id"]]["code"] == "975310"
    assert got[a["rental_id"]]["code"] == "246801"
    assert report["poller:getatext"]["state"] == "failing"
    assert report["sandbox:getatext"]["state"] == "failing"  # the push for A raised inside its event loop
    assert str(report["sandbox:getatext"]["last_error"]).startswith(error)


async def seed_uncertain_purchase(tmp_path: Path, gotsms: GotSmsProvider, sandbox: GotSmsSandbox) -> tuple[int, str]:
    """What a server that died left: a purchase whose rent the provider made, its answer lost."""
    plan = next(p for p in sandbox.plans.values() if p.duration_type == "day")
    ledger = await SqliteLedger.open(settings(tmp_path).ledger_path)
    try:
        purchase_id = await ledger.reserve(
            provider="gotsms", kind="rent", amount=Decimal("5"), plan_id=f"gotsms:{plan.id}"
        )
        await ledger.settle(purchase_id, "uncertain", note="the answer was lost")
    finally:
        await ledger.close()
    return purchase_id, (await gotsms.create_rent(plan.id)).rental.rental_id


async def test_start_up_reconciliation_is_retried_and_healthz_says_degraded_until_it_succeeds(
    tmp_path: Path, adapters: tuple[GotSmsProvider, GetatextProvider], gotsms_sandbox: GotSmsSandbox
) -> None:
    purchase_id, rental_id = await seed_uncertain_purchase(tmp_path, adapters[0], gotsms_sandbox)
    fault = Fault(adapters[0], "rents", ERRORS["RuntimeError"])
    app = app_over(tmp_path, adapters)
    async with serve_loopback(http_app(app, "127.0.0.1")) as base, httpx.AsyncClient() as http:
        await until(lambda: fault.raised >= 3)
        degraded = (await http.get(f"{base}/healthz")).json()
        async with Client(f"{base}/mcp") as client:
            await ok(client, "get_balance")  # serving all along
        fault.on = False

        async def healthy() -> dict[str, Any]:
            body: dict[str, Any] = (await http.get(f"{base}/healthz")).json()
            return body

        with anyio.fail_after(15):
            while (recovered := await healthy())["status"] != "ok":
                await anyio.sleep(0.05)
        state = app.runtime.require()
        purchase = await state.rentals.ledger.purchase(purchase_id)
    assert degraded["status"] == "degraded"
    reconcile = degraded["tasks"]["reconcile"]
    assert reconcile["state"] == "failing"
    assert reconcile["failures"] >= 2
    assert reconcile["last_error"].startswith("RuntimeError at test_supervised.py:")
    assert "boom" not in str(degraded)
    assert recovered["tasks"]["reconcile"] == {"state": "done"}
    assert recovered["tasks"]["poller:gotsms"] == {"state": "running"}
    assert purchase is not None
    assert (purchase.state, purchase.rental_id) == ("bought", rental_id)


async def test_shutting_down_stops_tasks_that_keep_failing(
    tmp_path: Path, adapters: tuple[GotSmsProvider, GetatextProvider], gotsms_sandbox: GotSmsSandbox
) -> None:
    await seed_uncertain_purchase(tmp_path, adapters[0], gotsms_sandbox)
    fault = Fault(adapters[0], "rents", ERRORS["RecursionError"])
    app = app_over(tmp_path, adapters)
    with anyio.fail_after(10):
        async with Client(app.mcp) as client:
            await until(lambda: fault.raised >= 3)
            await ok(client, "get_balance")
    assert app.runtime.state is None
    stopped_at = fault.raised
    await anyio.sleep(0.3)  # several back-offs: a task still running would have called again
    assert fault.raised == stopped_at


async def test_the_heartbeat_survives_a_locked_ledger_and_beats_again(
    tmp_path: Path, adapters: tuple[GotSmsProvider, GetatextProvider]
) -> None:
    app = app_over(tmp_path, adapters)
    async with Client(app.mcp) as client:
        ledger = app.runtime.require().rentals.ledger

        async def last_beat() -> float:
            row = await ledger._run(lambda: ledger._db.execute("SELECT MAX(heartbeat_at) FROM processes").fetchone())
            return float(row[0])

        fault = Fault(ledger, "beat", ERRORS["sqlite3.OperationalError"])
        await until(lambda: fault.raised >= 1)  # the next heartbeat (every 5 s)
        failing = app.supervisor.report()["heartbeat"]
        await ok(client, "get_balance")
        fault.on, stopped = False, time.time()
        with anyio.fail_after(15):
            while await last_beat() < stopped:
                await anyio.sleep(0.05)
        await until(lambda: app.supervisor.report()["heartbeat"] == {"state": "running"})
    assert failing["state"] == "failing"
    assert str(failing["last_error"]).startswith("sqlite3.OperationalError at test_supervised.py:")

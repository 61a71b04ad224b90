"""Replica benchmark: code delivery across replicas, provider listing reads, and failover after SIGKILL of the leader.

1 and 3 `smsrent-mcp --http` processes share one PostgreSQL database (a fresh database on the server at
--database-url, default SMSRENT_TEST_DATABASE_URL, dropped afterwards) and one GotSMS sandbox served by uvicorn
in this process on loopback. One replica leads the account (it polls); the others hear of codes through NOTIFY.

    python benchmarks/failover.py           # the full run, about 4 minutes
    python benchmarks/failover.py --quick   # a smoke run with small samples and short windows

Delivery latency runs from the moment an SMS becomes visible at the sandbox to the moment `wait_for_code` returns
it on a replica that does not lead (the only one, with one replica). Listing reads count GET /api/messages while
rentals wait on every replica. Failover runs from the leader's SIGKILL (an SMS becomes visible at that moment)
to the code returned on a survivor, and to a survivor's /healthz naming it the poller.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from delivery import call, clean_env, free_port, percentile, row, start_http_server
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger.postgres.migrations import migrate

TIMING = SandboxTiming(
    wake_queue=0.2, online_window=3600.0, code_delay=1.0, cancel_after=0.0, rental_lifetime=3600.0, auto_code=False
)
MESSAGES = ("GET", "/api/messages")


@dataclass(frozen=True)
class Plan:
    codes: int
    delay: tuple[float, float]
    window: float
    waits: int
    failovers: int


FULL = Plan(codes=30, delay=(1.0, 6.0), window=60.0, waits=9, failovers=5)
QUICK = Plan(codes=6, delay=(0.5, 2.0), window=10.0, waits=3, failovers=1)


@dataclass
class Replica:
    base: str
    process: subprocess.Popen[bytes]
    client: Client

    async def polls(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return "gotsms" in (await http.get(f"{self.base}/healthz")).json().get("polls", [])
        except httpx.HTTPError:
            return False


@asynccontextmanager
async def database(server: str) -> AsyncIterator[SecretStr]:
    """A fresh, migrated database on `server`, dropped afterwards."""
    name = f"smsrent_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = SecretStr(urlsplit(server)._replace(path=f"/{name}").geturl())
    try:
        await migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def replicas(count: int, url: SecretStr, sandbox: GotSmsSandbox, provider: str) -> AsyncIterator[list[Replica]]:
    """`count` HTTP replicas on the database, each with a data dir of its own, once each answers /healthz."""
    with tempfile.TemporaryDirectory(prefix="smsrent-failover-") as work:
        async with AsyncExitStack() as stack:
            started: list[Replica] = []
            for n in range(count):
                data_dir, port = Path(work) / f"replica-{n}", free_port()
                env = clean_env(
                    str(data_dir),
                    SMSRENT_DATABASE_URL=url.get_secret_value(),
                    GOTSMS_API_TOKEN=sandbox.token,
                    GOTSMS_BASE_URL=f"{provider}/api",
                )
                process = start_http_server(port, env, data_dir)
                stack.callback(stop, process)
                base = f"http://127.0.0.1:{port}"
                await until_healthy(base, process)
                http = await stack.enter_async_context(httpx2.AsyncClient(timeout=60))
                client = await stack.enter_async_context(
                    Client(streamable_http_client(f"{base}/mcp", http_client=http))
                )
                started.append(Replica(base, process, client))
            yield started


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=20)


async def until_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        with anyio.fail_after(30):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"replica exited with {process.returncode}")
                try:
                    if (await http.get(f"{base}/healthz")).json()["status"] == "ok":
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)


async def leader(group: list[Replica]) -> Replica:
    with anyio.fail_after(30):
        while True:
            leading = [r for r in group if await r.polls()]
            if len(leading) == 1:
                return leading[0]
            await anyio.sleep(0.05)


async def rent(replica: Replica) -> str:
    result = await call(replica.client, "rent_number", service="telegram", provider="gotsms", max_price="5")
    return str(result["rental"]["rental_id"])


async def code_back(replica: Replica, rental_id: str) -> float:
    """Wait for the rental's code on `replica`; the moment it returned."""
    while True:
        result = await call(replica.client, "wait_for_code", rental_id=rental_id, timeout_seconds=45)
        if result["outcome"] == "code_received":
            return time.time()


def deliver(sandbox: GotSmsSandbox, rental_id: str) -> float:
    code = f"{random.randrange(10**6):06d}"
    sandbox.deliver(rental_id.partition(":")[2], f"Your Telegram code is {code}", code)
    return time.time()


async def latencies(plan: Plan, waiter: Replica, sandbox: GotSmsSandbox) -> list[float]:
    """`plan.codes` rentals wait on `waiter` at once; each SMS becomes visible after a random delay."""
    rental_ids = [await rent(waiter) for _ in range(plan.codes)]
    found: list[float] = []

    async def one(rental_id: str) -> None:
        visible: list[float] = []

        async def inject() -> None:
            await anyio.sleep(random.uniform(*plan.delay))
            visible.append(deliver(sandbox, rental_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(inject)
            returned = await code_back(waiter, rental_id)
        found.append(returned - visible[0])

    async with anyio.create_task_group() as tg:
        for rental_id in rental_ids:
            tg.start_soon(one, rental_id)
    return found


async def reads_per_minute(plan: Plan, group: list[Replica], sandbox: GotSmsSandbox) -> int:
    """Listing reads per minute while `plan.waits` rentals wait, spread over the replicas, with no SMS coming."""
    rental_ids = [await rent(group[n % len(group)]) for n in range(plan.waits)]

    async def waiting(replica: Replica, rental_id: str) -> None:
        while True:
            await call(replica.client, "wait_for_code", rental_id=rental_id, timeout_seconds=45)

    async with anyio.create_task_group() as tg:
        for n, rental_id in enumerate(rental_ids):
            tg.start_soon(waiting, group[n % len(group)], rental_id)
        await anyio.sleep(1.0)
        since = time.time()
        await anyio.sleep(plan.window)
        reads = sum(1 for at, *request in sandbox.requests if tuple(request) == MESSAGES and at >= since)
        tg.cancel_scope.cancel()
    return round(reads * 60.0 / plan.window)


async def failover(url: SecretStr, sandbox: GotSmsSandbox, provider: str) -> tuple[float, float]:
    """Three replicas; a rental waits on a follower; the leader is killed as its SMS becomes visible. Seconds to
    the code on the follower, and to a survivor's /healthz naming it the poller."""
    async with replicas(3, url, sandbox, provider) as group:
        old = await leader(group)
        waiter, other = (r for r in group if r is not old)
        rental_id = await rent(other)
        result: dict[str, float] = {}

        async def wait() -> None:
            result["code"] = await code_back(waiter, rental_id)

        async def new_leader() -> None:
            await leader([waiter, other])
            result["leader"] = time.time()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(1.0)  # the wait is under way, the code expected
            old.process.send_signal(signal.SIGKILL)
            killed = deliver(sandbox, rental_id)
            tg.start_soon(new_leader)
    return result["code"] - killed, result["leader"] - killed


async def main(plan: Plan, server: str) -> int:
    random.seed(13)
    figures: dict[int, dict[str, Any]] = {}
    sandbox = GotSmsSandbox(timing=TIMING, balance=Decimal(1_000_000))
    async with serve_loopback(sandbox.app) as provider, database(server) as url:
        for count in (1, 3):
            print(f"{count} replica(s) ...", file=sys.stderr)
            async with replicas(count, url, sandbox, provider) as group:
                lead = await leader(group)
                waiter = next((r for r in group if r is not lead), lead)
                figures[count] = {
                    "latency": await latencies(plan, waiter, sandbox),
                    "rpm": await reads_per_minute(plan, group, sandbox),
                }
        print("failover ...", file=sys.stderr)
        failovers = [await failover(url, sandbox, provider) for _ in range(plan.failovers)]

    print("\nCode delivery: SMS visible at the provider -> wait_for_code returns it on a replica that does not poll")
    print(row("", ["n", "p50 s", "p95 s"]))
    for count, got in figures.items():
        values = got["latency"]
        label = "1 replica (it polls)" if count == 1 else f"{count} replicas (a follower)"
        print(row(label, [str(len(values)), f"{statistics.median(values):.3f}", f"{percentile(values, 0.95):.3f}"]))
    print(f"\nProvider listing reads per minute (GET /api/messages, {plan.waits} rentals waiting, {plan.window:.0f} s)")
    for count, got in figures.items():
        print(row(f"{count} replica(s)", [str(got["rpm"])]))
    print(f"\nFailover after SIGKILL of the leader (seconds, {len(failovers)} runs: median, max)")
    codes, leads = [c for c, _ in failovers], [lead for _, lead in failovers]
    print(row("SIGKILL -> code (follower)", [f"{statistics.median(codes):.3f}", f"{max(codes):.3f}"]))
    print(row("SIGKILL -> new leader", [f"{statistics.median(leads):.3f}", f"{max(leads):.3f}"]))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples and short windows (a smoke run)")
    parser.add_argument("--database-url", default=os.environ.get("SMSRENT_TEST_DATABASE_URL"))
    options = parser.parse_args()
    if not options.database_url:
        sys.exit("failover.py: give --database-url (a PostgreSQL server where it may create a database)")
    sys.exit(anyio.run(main, QUICK if options.quick else FULL, options.database_url))

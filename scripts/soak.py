"""A seeded soak with faults: MCP clients over stdio and streamable HTTP run random rent / wait / refund / wake /
list sequences on both sandbox providers (served on loopback) while the providers fail in every documented way
and the stdio servers are killed with SIGKILL. Then the invariants are checked and a table is printed:

- every rental a provider holds is in the ledger, and vice versa, but for Getatext rentals whose id never
  arrived, each covered by an unverified purchase (settled from the balance, counted at its max_price);
- the money each provider charged equals the money the ledger recorded for verified purchases plus what was
  charged for the rentals of unverified ones, and unverified ones are counted at least at that: nothing charged
  is missing from the ledger;
- no cap was exceeded (each charge within SMSRENT_MAX_PRICE, the net spend never above SMSRENT_DAILY_BUDGET);
- every message a provider delivered for a recorded rental is stored;
- no server exited but by our kills, and each still answers tools/list;
- no secret (provider keys, HTTP token, webhook secret) appears in any result, resource, error or log line.

    python scripts/soak.py            # the full soak: 500 sequences, about 5 minutes
    python scripts/soak.py --quick    # what CI runs: 100 sequences, about 1.5 minutes

Exit status 1 when an invariant fails. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import FAULTS, SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox

MAX_PRICE = Decimal("2")
PROVIDER_TIMEOUT = 1.5  # SMSRENT_PROVIDER_TIMEOUT; a `slow` fault answers after SLOW
SLOW = 2.5
SETTLE_AFTER = 6.0  # SMSRENT_SETTLE_AFTER: longer than a slow answer takes to land
TIMING = SandboxTiming(
    wake_queue=0.4, online_window=20.0, code_delay=0.6, cancel_after=0.5, refund_window=900.0, rental_lifetime=900.0
)
BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("wait_for_code", {"rental_id": "gotsms:../../api/account"}),
    ("refund", {"rental_id": "getatext:1 OR 1=1"}),
    ("get_messages", {"rental_id": "x" * 5000}),
    ("rent_number", {"plan_id": "gotsms:%2F..%2Faccount", "max_price": "1"}),
    ("rent_number", {"service": "telegram", "max_price": "-1"}),
    ("rent_number", {"service": "telegram", "max_price": "1e309"}),
    ("rent_number", {"service": "telegram"}),
    ("wait_for_code", {"rental_id": "gotsms:1", "timeout_seconds": -5}),
    ("list_rentals", {"status": "everything", "unknown": True}),
    ("wake_up", {"rental_id": "getatext:💥"}),
]


@dataclass(frozen=True)
class Plan:
    """How big a soak is."""

    name: str
    sequences: int
    stdio_servers: int
    http_clients: int
    fault_rate: float
    kill_every: tuple[float, float]  # seconds between kills of each stdio server
    time_limit: float

    @property
    def daily_budget(self) -> Decimal:
        """Tight enough to be reached during the run."""
        return (Decimal(self.sequences) / 10).quantize(Decimal("0.01"))


QUICK = Plan("quick", 100, 1, 2, 0.08, (6.0, 15.0), 180.0)
FULL = Plan("full", 500, 2, 3, 0.08, (8.0, 25.0), 900.0)


@dataclass
class Tally:
    """What the clients did and saw."""

    sequences: int = 0
    by_world: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rent_attempts: int = 0
    bad_inputs: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # every text a client received, scanned for secrets


@dataclass
class World:
    """One server with its own ledger and its own two provider accounts."""

    name: str
    transport: Literal["stdio", "http"]
    data_dir: Path
    gotsms: GotSmsSandbox
    getatext: GetatextSandbox
    secrets: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    opening: Decimal = Decimal(0)
    peak_spend: Decimal = Decimal(0)
    op: str = "idle"  # what the client is doing now (what a kill interrupts)
    kill: anyio.CancelScope | None = None
    pid: int | None = None
    url: str = ""  # the HTTP server's, once it runs

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def sandboxes(self) -> tuple[GotSmsSandbox, GetatextSandbox]:
        return self.gotsms, self.getatext

    def spend(self) -> Decimal:
        return self.opening - self.gotsms.balance - self.getatext.balance


# -- Running clients ----------------------------------------------------------------------------------------


def texts(result: CallToolResult) -> str:
    blocks = [b.text for b in result.content if isinstance(b, TextContent)]
    return "\n".join(blocks) + json.dumps(result.structured_content)


async def call(client: Client, world: World, tally: Tally, tool: str, **arguments: Any) -> dict[str, Any] | None:
    """One tool call: its structured content, or None for a tool error (counted by kind)."""
    world.op = tool
    with anyio.fail_after(60):
        result = await client.call_tool(tool, arguments)
    world.op = "idle"
    tally.calls[tool] += 1
    tally.seen.append(texts(result))
    if result.is_error:
        tally.errors[error_kind(texts(result))] += 1
        return None
    content: dict[str, Any] | None = result.structured_content
    return content


def error_kind(text: str) -> str:
    lowered = text.lower()
    for needle, kind in (
        ("smsrent_daily_budget", "budget"),
        ("smsrent_max_price", "price cap"),
        ("max_price", "price cap"),
        ("settled", "unsettled purchase"),
        ("validation", "bad input"),
        ("invalid", "bad input"),
        ("not found", "not found"),
        ("refund", "refund refused"),
        ("cancel", "refund refused"),
    ):
        if needle in lowered:
            return kind
    return "provider"


async def sequence(client: Client, world: World, tally: Tally, rng: random.Random) -> None:
    """A random session an agent might run: find a plan, rent, then wait / read / wake / refund / list."""
    provider = rng.choice(["gotsms", "getatext"])
    if rng.random() < 0.15:
        tool, arguments = rng.choice(BAD_INPUTS)
        tally.bad_inputs += 1
        await call(client, world, tally, tool, **arguments)
    plans = await call(client, world, tally, "list_plans", provider=provider, max_price=str(MAX_PRICE))
    if not plans or not plans["plans"]:
        return
    plan = rng.choice(plans["plans"][:6])
    max_price = rng.choice([str(MAX_PRICE), plan["price"], "0.05"])  # 0.05: below every price, refused
    tally.rent_attempts += 1
    rented = await call(client, world, tally, "rent_number", plan_id=plan["plan_id"], max_price=max_price)
    if rented is None:
        await call(client, world, tally, "list_rentals", status="all")
        return
    rental_id = rented["rental"]["rental_id"]
    for _ in range(rng.randint(1, 4)):
        step = rng.choice(["wait", "wait", "wait", "messages", "wake", "refund", "list", "balance", "resource"])
        if step == "wait":
            await call(client, world, tally, "wait_for_code", rental_id=rental_id, timeout_seconds=rng.choice([2, 4]))
        elif step == "messages":
            await call(client, world, tally, "get_messages", rental_id=rental_id)
        elif step == "wake":
            await call(client, world, tally, "wake_up", rental_id=rental_id)
        elif step == "refund":
            await call(client, world, tally, "refund", rental_id=rental_id)
        elif step == "list":
            await call(client, world, tally, "list_rentals", status=rng.choice(["active", "all"]))
        elif step == "balance":
            await call(client, world, tally, "get_balance")
        else:
            world.op = "read_resource"
            for uri in ("smsrent://rentals/active", "smsrent://messages/recent", f"smsrent://rentals/{rental_id}"):
                read = await client.read_resource(uri)
                tally.seen.append(read.model_dump_json())
            world.op = "idle"
    if rng.random() < 0.5:
        await call(client, world, tally, "refund", rental_id=rental_id)


async def drive(client: Client, world: World, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    while tally.sequences < plan.sequences and time.monotonic() < deadline:
        tally.sequences += 1
        tally.by_world[world.name] += 1
        await sequence(client, world, tally, rng)


@asynccontextmanager
async def stdio_session(world: World) -> AsyncIterator[Client]:
    pidfile = world.data_dir / "server.pid"
    script = f'echo $$ > "{pidfile}"; exec "{sys.executable}" -m smsrent 2>>"{world.log}"'
    params = StdioServerParameters(command="/bin/sh", args=["-c", script], env=world.env)
    async with Client(params) as client:
        world.pid = int(pidfile.read_text())
        yield client


async def stdio_client(world: World, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    """One client on its own stdio server; when the server is killed, a new one is started and the work goes on."""
    while tally.sequences < plan.sequences and time.monotonic() < deadline:
        with anyio.CancelScope() as scope:
            world.kill = scope
            try:
                async with stdio_session(world) as client:
                    await drive(client, world, tally, rng, plan, deadline)
            except Exception as exc:
                if world.pid is not None:  # not killed by us: a real failure
                    tally.failures.append(f"{world.name}: {type(exc).__name__}: {exc}")
                    return
        world.kill = None


async def killer(world: World, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    """SIGKILL the stdio server at random moments: mid-purchase, mid-wait, mid-write, whatever it was doing."""
    while tally.sequences < plan.sequences and time.monotonic() < deadline - 5:
        await anyio.sleep(rng.uniform(*plan.kill_every))
        if world.kill is None or world.pid is None or tally.sequences >= plan.sequences:
            continue
        tally.crashes[world.op] += 1
        os.kill(world.pid, signal.SIGKILL)
        world.pid = None
        world.kill.cancel()


async def http_clients(world: World, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(plan.http_clients):
            tg.start_soon(http_client_loop, world, tally, random.Random(rng.random()), plan, deadline)


async def http_client_loop(world: World, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    try:
        async with http_session(world) as client:
            await drive(client, world, tally, rng, plan, deadline)
    except Exception as exc:
        tally.failures.append(f"{world.name}: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def http_session(world: World) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {world.secrets['SMSRENT_HTTP_TOKEN']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=90) as authorized,
        Client(streamable_http_client(f"{world.url}/mcp", http_client=authorized)) as client,
    ):
        yield client


@asynccontextmanager
async def http_server(world: World) -> AsyncIterator[subprocess.Popen[bytes]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    world.url = url
    world.getatext.webhook_url = f"{url}/webhooks/getatext/{world.secrets['SMSRENT_WEBHOOK_SECRET']}"
    with world.log.open("ab") as log:
        argv = [sys.executable, "-m", "smsrent", "--http", "--port", str(port)]
        process = subprocess.Popen(argv, env=world.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # noqa: ASYNC220
    try:
        token = world.secrets["SMSRENT_HTTP_TOKEN"]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as probe:
            with anyio.fail_after(30):
                while process.poll() is None:
                    try:
                        if (await probe.get(f"{url}/healthz")).json().get("status") == "ok":
                            break
                    except httpx.HTTPError:
                        pass
                    await anyio.sleep(0.1)
                else:
                    raise RuntimeError(f"the HTTP server exited: {world.log.read_text()[-500:]}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- The worlds -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_world(name: str, transport: Literal["stdio", "http"], root: Path, seed: int, plan: Plan) -> World:
    keys = {
        "GOTSMS_API_TOKEN": f"gotsms-SECRET-{secrets.token_hex(12)}",
        "GETATEXT_API_KEY": f"getatext-SECRET-{secrets.token_hex(12)}",
        "SMSRENT_HTTP_TOKEN": f"http-SECRET-{secrets.token_hex(12)}",
        "SMSRENT_WEBHOOK_SECRET": f"webhook-SECRET-{secrets.token_hex(12)}",
    }
    gotsms = GotSmsSandbox(timing=TIMING, seed=seed, slow_seconds=SLOW, token=keys["GOTSMS_API_TOKEN"])
    getatext = GetatextSandbox(timing=TIMING, seed=seed + 1, slow_seconds=SLOW, api_key=keys["GETATEXT_API_KEY"])
    gotsms.balance = getatext.balance = Decimal(1000)
    data_dir = root / name
    data_dir.mkdir()
    world = World(name, transport, data_dir, gotsms, getatext, keys, opening=gotsms.balance + getatext.balance)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}
    world.env = inherited | {
        "GOTSMS_API_TOKEN": keys["GOTSMS_API_TOKEN"],
        "GETATEXT_API_KEY": keys["GETATEXT_API_KEY"],
        "SMSRENT_DATA_DIR": str(data_dir),
        "SMSRENT_MAX_PRICE": str(MAX_PRICE),
        "SMSRENT_DAILY_BUDGET": str(plan.daily_budget),
        "SMSRENT_PROVIDER_TIMEOUT": str(PROVIDER_TIMEOUT),
        "SMSRENT_SETTLE_AFTER": str(SETTLE_AFTER),
        "SMSRENT_LOG_LEVEL": "DEBUG",
    }
    if transport == "http":
        world.env["SMSRENT_HTTP_TOKEN"] = keys["SMSRENT_HTTP_TOKEN"]
        world.env["SMSRENT_WEBHOOK_SECRET"] = keys["SMSRENT_WEBHOOK_SECRET"]
    return world


async def watch_spend(worlds: list[World]) -> None:
    """Sample each server's net spend at its providers, to check the daily budget held at every moment."""
    while True:
        for world in worlds:
            world.peak_spend = max(world.peak_spend, world.spend())
        await anyio.sleep(0.01)


async def settle(world: World, client: Client, tally: Tally) -> None:
    """After the faults stop: let every uncertain purchase settle, and let each rental's messages sync."""
    with anyio.fail_after(SETTLE_AFTER + 60):
        await anyio.sleep(SETTLE_AFTER)
        while unsettled(world):
            await call(client, world, tally, "list_rentals", status="all")
            await anyio.sleep(0.5)
    listed = await call(client, world, tally, "list_rentals", status="all")
    for rental in (listed or {}).get("rentals", []):
        await call(client, world, tally, "get_messages", rental_id=rental["rental_id"])
    await client.list_tools()  # the server still answers


def ledger(world: World, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(world.data_dir / "ledger.sqlite3") as db:
        return db.execute(query).fetchall()


def unsettled(world: World) -> int:
    return len(ledger(world, "SELECT 1 FROM purchases WHERE state IN ('reserved', 'uncertain')"))


# -- Invariants -----------------------------------------------------------------------------------------------


@dataclass
class Figures:
    purchases_recorded: int = 0
    unverified: int = 0
    charged: Decimal = Decimal(0)
    recorded: Decimal = Decimal(0)  # by verified purchases, less refunds
    charged_unverified: Decimal = Decimal(0)  # for the rentals whose id never arrived
    counted_unverified: Decimal = Decimal(0)  # unverified purchases at their max_price
    rentals_at_providers: int = 0
    rentals_in_ledgers: int = 0
    idless: int = 0
    delivered: int = 0
    stored: int = 0
    peak_spend: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def check(world: World, plan: Plan, figures: Figures) -> None:
    problems = figures.problems
    at_provider = {f"gotsms:{i}" for i in world.gotsms.rents} | {f"getatext:{i}" for i in world.getatext.rentals}
    at_provider |= {f"getatext:long:{i}" for i in world.getatext.long_rentals}
    in_ledger = {row[0] for row in ledger(world, "SELECT rental_id FROM rentals")}
    bought = ledger(world, "SELECT price, refunded, max_price, verified FROM purchases WHERE state = 'bought'")
    verified = [(Decimal(price), Decimal(refunded or 0)) for price, refunded, _, sure in bought if sure]
    unverified = [Decimal(max_price) for _, _, max_price, sure in bought if not sure]
    if in_ledger - at_provider:
        problems.append(f"{world.name}: in the ledger but not at the provider: {sorted(in_ledger - at_provider)}")
    missing = at_provider - in_ledger  # rentals whose id never arrived: each one an unverified purchase's
    if any(not r.startswith("getatext:") or ":long:" in r for r in missing) or len(missing) > len(unverified):
        problems.append(f"{world.name}: at the provider, not in the ledger: {sorted(missing)}")
    recorded = sum((price - refunded for price, refunded in verified), Decimal(0))
    charged_unverified = sum((world.getatext.rentals[int(r.split(":")[1])].price for r in missing), Decimal(0))
    counted_unverified = sum(unverified, Decimal(0))
    charged = world.spend()
    if recorded + charged_unverified != charged:
        problems.append(
            f"{world.name}: providers charged {charged}, the ledger recorded {recorded} for verified purchases and"
            f" {charged_unverified} was charged for the rentals of unverified ones"
        )
    if counted_unverified < charged_unverified:
        problems.append(
            f"{world.name}: unverified purchases count {counted_unverified}, less than {charged_unverified} charged"
        )
    prices = [r.price for r in world.gotsms.rents.values()] + [r.price for r in world.getatext.rentals.values()]
    if any(price > MAX_PRICE for price in prices):
        problems.append(f"{world.name}: a rental cost more than SMSRENT_MAX_PRICE {MAX_PRICE}")
    if world.peak_spend > plan.daily_budget:
        problems.append(f"{world.name}: net spend reached {world.peak_spend} > budget {plan.daily_budget}")
    if left := unsettled(world):
        problems.append(f"{world.name}: {left} purchases still unsettled")
    codes = Counter(
        (json.loads(data)["rental_id"], json.loads(data).get("code"))
        for (data,) in ledger(world, "SELECT data FROM messages")
    )
    delivered = Counter(
        (f"gotsms:{sms.rent.id}", sms.code) for sms in world.gotsms.sms if f"gotsms:{sms.rent.id}" in in_ledger
    ) + Counter(
        (f"getatext:{i}", r.code) for i, r in world.getatext.rentals.items() if r.code and f"getatext:{i}" in in_ledger
    )
    if delivered - codes:
        problems.append(f"{world.name}: delivered but not stored: {sorted(delivered - codes)}")
    figures.purchases_recorded += len(bought)
    figures.unverified += len(unverified)
    figures.charged += charged
    figures.recorded += recorded
    figures.charged_unverified += charged_unverified
    figures.counted_unverified += counted_unverified
    figures.rentals_at_providers += len(at_provider)
    figures.rentals_in_ledgers += len(in_ledger)
    figures.idless += len(missing)
    figures.delivered += sum(delivered.values())
    figures.stored += sum((delivered & codes).values())
    figures.peak_spend.append(f"{world.peak_spend}")
    for sandbox in world.sandboxes:
        figures.faults.update(sandbox.injected)


def secrets_found(worlds: list[World], tally: Tally) -> Counter[str]:
    found: Counter[str] = Counter()
    logs = "\n".join(w.log.read_text(errors="replace") for w in worlds if w.log.exists())
    haystacks = [*tally.seen, *tally.failures, logs]
    for world in worlds:
        for name, value in world.secrets.items():
            found[name] += sum(text.count(value) for text in haystacks)
    return found


# -- The run --------------------------------------------------------------------------------------------------


async def soak(plan: Plan, seed: int, root: Path) -> int:
    rng = random.Random(seed)
    worlds = [make_world(f"stdio-{i}", "stdio", root, seed + 10 * i, plan) for i in range(plan.stdio_servers)]
    worlds.append(make_world("http", "http", root, seed + 100, plan))
    tally = Tally()
    started = time.monotonic()
    deadline = started + plan.time_limit
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_spend, worlds)
        for world in worlds:
            gotsms_url = await tg.start(serve, world.gotsms)
            getatext_url = await tg.start(serve, world.getatext)
            world.env |= {"GOTSMS_BASE_URL": f"{gotsms_url}/api", "GETATEXT_BASE_URL": getatext_url}
            for sandbox in world.sandboxes:
                sandbox.chaos(plan.fault_rate, FAULTS)
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # the faults make the sandboxes complain
        http_world = worlds[-1]
        async with http_server(http_world) as process:
            async with anyio.create_task_group() as clients:
                for world in worlds[:-1]:
                    clients.start_soon(stdio_client, world, tally, random.Random(rng.random()), plan, deadline)
                    clients.start_soon(killer, world, tally, random.Random(rng.random()), plan, deadline)
                clients.start_soon(http_clients, http_world, tally, random.Random(rng.random()), plan, deadline)
            for world in worlds:
                for sandbox in world.sandboxes:
                    sandbox.chaos(0)
            for world in worlds[:-1]:
                async with stdio_session(world) as client:
                    await settle(world, client, tally)
            async with http_session(http_world) as client:
                await settle(http_world, client, tally)
            if process.poll() is not None:
                tally.failures.append(f"the HTTP server exited with code {process.returncode}")
        tg.cancel_scope.cancel()
    figures = Figures()
    for world in worlds:
        check(world, plan, figures)
    leaks = secrets_found(worlds, tally)
    report(plan, seed, worlds, tally, figures, leaks, time.monotonic() - started)
    return 1 if figures.problems or tally.failures or sum(leaks.values()) else 0


async def serve(sandbox: GotSmsSandbox | GetatextSandbox, *, task_status: anyio.abc.TaskStatus[str]) -> None:
    async with serve_loopback(sandbox.app) as url:
        task_status.started(url)
        await anyio.sleep_forever()


def report(
    plan: Plan,
    seed: int,
    worlds: list[World],
    tally: Tally,
    figures: Figures,
    leaks: Counter[str],
    elapsed: float,
) -> None:
    errors = ", ".join(f"{k} {v}" for k, v in tally.errors.most_common())
    faults = ", ".join(f"{k} {v}" for k, v in sorted(figures.faults.items()))
    crashes = ", ".join(f"during {k} {v}" for k, v in tally.crashes.most_common()) or "none"
    stdio = sum(w.transport == "stdio" for w in worlds)
    rows = [
        ("servers / clients", f"{stdio} stdio + 1 HTTP / {stdio} stdio + {plan.http_clients} HTTP clients"),
        (
            "sequences run",
            f"{tally.sequences} in {elapsed:.0f} s ({', '.join(f'{k} {v}' for k, v in tally.by_world.items())})",
        ),
        ("tool calls", f"{sum(tally.calls.values())} ({sum(tally.errors.values())} tool errors: {errors})"),
        ("faults injected", f"{sum(figures.faults.values())} ({faults})"),
        (
            "purchases attempted / made / recorded",
            f"{tally.rent_attempts} / {figures.rentals_at_providers} / {figures.purchases_recorded}"
            f" ({figures.unverified} unverified)",
        ),
        (
            "money charged vs recorded",
            f"{figures.charged:.2f} = {figures.recorded:.2f} verified + {figures.charged_unverified:.2f} for"
            f" unverified purchases (counted at {figures.counted_unverified:.2f}) USD",
        ),
        (
            "caps",
            f"peak net spend {' / '.join(figures.peak_spend)} <= budget {plan.daily_budget}; each <= {MAX_PRICE}",
        ),
        (
            "rentals at providers vs ledgers",
            f"{figures.rentals_at_providers} vs {figures.rentals_in_ledgers}"
            f" (+{figures.idless} Getatext rentals whose id never arrived, of unverified purchases)",
        ),
        ("messages delivered vs stored", f"{figures.delivered} vs {figures.stored}"),
        ("bad inputs tried", str(tally.bad_inputs)),
        ("crashes survived (SIGKILL)", f"{sum(tally.crashes.values())} ({crashes})"),
        ("unexpected client failures", str(len(tally.failures))),
        ("secrets found", str(sum(leaks.values()))),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"smsrent soak: {plan.name}, seed {seed}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for problem in [*figures.problems, *tally.failures[:10]]:
        print(f"  FAIL {problem}")
    print(
        "  invariants: " + ("all hold" if not (figures.problems or tally.failures or sum(leaks.values())) else "BROKEN")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short run CI does")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the ledgers and server logs in this (new) directory")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.keep:
        args.keep.mkdir(parents=True)
        return anyio.run(soak, plan, args.seed, args.keep)
    with tempfile.TemporaryDirectory(prefix="smsrent-soak-") as root:
        return anyio.run(soak, plan, args.seed, Path(root))


if __name__ == "__main__":
    sys.exit(main())

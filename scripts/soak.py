"""A seeded soak with faults: MCP clients over stdio and streamable HTTP run random rent / wait / refund / wake /
list sequences on both sandbox providers (served on loopback) while the providers fail in every documented way,
send hostile bodies (a lying content-encoding, binary, JSON nested past any parser's limit, 30 MB, swapped content
types, a 200 that contradicts itself, a body trickled for longer than the timeout), and the stdio servers are
killed with SIGKILL. Two of the stdio servers share one data dir and one webhook port (Claude Desktop and Claude
Code on the default ledger) and buy from the same provider accounts. Then the invariants are checked and a table
is printed:

- every rental a provider holds is in the ledger, and vice versa, but for Getatext rentals whose id never
  arrived, each covered by an unverified purchase (settled from the balance, counted at its max_price);
- the money each provider charged equals the money the ledger recorded for verified purchases plus what was
  charged for the rentals of unverified ones, and unverified ones are counted at least at that: nothing charged
  is missing from the ledger;
- no cap was exceeded (each charge within SMSRENT_MAX_PRICE, the net spend of each data dir, whichever servers
  share it, never above SMSRENT_DAILY_BUDGET);
- no purchase changed hands wrongly: one whose server was alive changed only as its own call settles or releases
  it, and one whose server was killed was only taken over (by the other server or by its restart), then settled;
- every message a provider delivered for a recorded rental is stored;
- no server exited but by our kills, each still answers tools/list, and every tool call answered within its
  bound (`tool_bound`: its own wait plus the provider calls it may make, each at most `CALL_BOUND`);
- no secret (provider keys, HTTP token, webhook secret) appears in any result, resource, error or log line.

    python scripts/soak.py            # the full soak: 500 sequences, about 4 minutes
    python scripts/soak.py --quick    # what CI runs: 100 sequences, about 1 minute

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
from contextlib import AsyncExitStack, asynccontextmanager, closing
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

from smsrent.providers.base import DEFAULT_RETRY
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import FAULTS, HOSTILE, SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger import HEARTBEAT_EVERY

MAX_PRICE = Decimal("2")
PROVIDER_TIMEOUT = 1.5  # SMSRENT_PROVIDER_TIMEOUT; a `slow` fault answers, and a `trickle` body trickles, for SLOW
SLOW = 2.5
SETTLE_AFTER = 6.0  # SMSRENT_SETTLE_AFTER: longer than a slow answer takes to land
RETRY_AFTER = 1.0  # what the sandboxes' 429 bursts ask for
# The most one provider call takes, retries included: each attempt ends within the timeout, from sending to the
# last byte, and safe calls wait between attempts (a backoff, or a 429's Retry-After).
CALL_BOUND = DEFAULT_RETRY.attempts * PROVIDER_TIMEOUT + sum(
    max(RETRY_AFTER, DEFAULT_RETRY.base_delay * 2**attempt) for attempt in range(DEFAULT_RETRY.attempts - 1)
)
# How many of a tool's provider calls, one after another, may each take CALL_BOUND in full (every attempt failing
# slowly); its other calls answer in milliseconds. Its own calls, and for a purchase or a refund those of the
# purchase it may queue behind on the provider's lock; wait_for_code's network calls are inside its own wait.
SEQUENTIAL_CALLS = {
    "get_balance": 1,  # both providers at once
    "list_plans": 1,
    "get_messages": 1,
    "wake_up": 2,  # status, wake
    "wait_for_code": 0,
    "refund": 7,  # the queue (4), refund, two looks at a refund whose answer was lost
    "rent_number": 9,  # settle a pending purchase, quote, the queue (4), balance, buy, settle a lost answer
    "list_rentals": 6,  # per provider: settle, list (a few pages) or re-check one-time rentals
}
SERVER_MARGIN = 5.0  # seconds of the server's own work per call (ledger, MCP) on a machine the test suite loads
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
# What the soak adds to a ledger to watch it (the server never reads these): each process that registers or beats,
# with its pid, and each change of a purchase's state or owner, with when it happened.
AUDIT = """
CREATE TABLE soak_beats (token TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE soak_purchases (
    purchase_id INTEGER NOT NULL, old_state TEXT, new_state TEXT, old_owner TEXT, new_owner TEXT, at REAL NOT NULL
);
CREATE TRIGGER soak_registered AFTER INSERT ON processes BEGIN
    INSERT INTO soak_beats VALUES (NEW.token, NEW.pid, (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER soak_beat AFTER UPDATE OF heartbeat_at ON processes BEGIN
    INSERT INTO soak_beats VALUES (NEW.token, NEW.pid, (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER soak_purchase AFTER UPDATE OF state, owner ON purchases
WHEN OLD.state IS NOT NEW.state OR OLD.owner IS NOT NEW.owner BEGIN
    INSERT INTO soak_purchases VALUES (
        NEW.purchase_id, OLD.state, NEW.state, OLD.owner, NEW.owner, (julianday('now') - 2440587.5) * 86400.0
    );
END;
"""


@dataclass(frozen=True)
class Plan:
    """How big a soak is."""

    name: str
    sequences: int
    stdio_worlds: tuple[int, ...]  # how many stdio servers share each stdio data dir
    http_clients: int
    fault_rate: float
    kill_every: tuple[float, float]  # seconds between kills of each stdio server
    time_limit: float

    @property
    def daily_budget(self) -> Decimal:
        """Tight enough to be reached during the run."""
        return (Decimal(self.sequences) / 10).quantize(Decimal("0.01"))


QUICK = Plan("quick", 100, (2,), 2, 0.1, (4.0, 10.0), 180.0)
FULL = Plan("full", 500, (1, 2), 3, 0.1, (8.0, 25.0), 900.0)


@dataclass
class Tally:
    """What the clients did and saw."""

    sequences: int = 0
    by_server: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slowest: dict[str, tuple[float, float]] = field(default_factory=dict)  # tool: (seconds, its bound)
    rent_attempts: int = 0
    bad_inputs: int = 0
    crashes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # every text a client received, scanned for secrets


@dataclass
class Life:
    """One server process: from its start until we killed it or it was closed."""

    pid: int
    started: float  # time.time()
    ended: float | None = None

    def alive(self, at: float) -> bool:
        return self.started <= at and (self.ended is None or at < self.ended)


@dataclass
class World:
    """One data dir (one ledger) with its own two provider accounts, and the servers that share it."""

    name: str
    transport: Literal["stdio", "http"]
    data_dir: Path
    gotsms: GotSmsSandbox
    getatext: GetatextSandbox
    secrets: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    opening: Decimal = Decimal(0)
    peak_spend: Decimal = Decimal(0)
    url: str = ""  # the HTTP server's, once it runs
    audited: bool = False

    @property
    def sandboxes(self) -> tuple[GotSmsSandbox, GetatextSandbox]:
        return self.gotsms, self.getatext

    def spend(self) -> Decimal:
        return self.opening - self.gotsms.balance - self.getatext.balance


@dataclass
class Server:
    """One server of a world: a stdio server is started again after each kill; each process is one `Life`."""

    name: str
    world: World
    op: str = "idle"  # what its client is doing now (what a kill interrupts)
    kill: anyio.CancelScope | None = None
    lives: list[Life] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.world.data_dir / f"{self.name}.log"

    @property
    def running(self) -> Life | None:
        return self.lives[-1] if self.lives and self.lives[-1].ended is None else None


# -- Running clients ----------------------------------------------------------------------------------------


def texts(result: CallToolResult) -> str:
    blocks = [b.text for b in result.content if isinstance(b, TextContent)]
    return "\n".join(blocks) + json.dumps(result.structured_content)


def tool_bound(tool: str, arguments: dict[str, Any]) -> float:
    """The longest a tool call may take: its own wait, and the provider calls it may make one after another,
    each within CALL_BOUND."""
    wait = max(0, arguments.get("timeout_seconds", 0)) if tool == "wait_for_code" else 0
    return wait + SEQUENTIAL_CALLS[tool] * CALL_BOUND + SERVER_MARGIN


async def call(client: Client, server: Server, tally: Tally, tool: str, **arguments: Any) -> dict[str, Any] | None:
    """One tool call: its structured content, or None for a tool error (counted by kind). Its duration is held
    against its bound."""
    server.op = tool
    bound = tool_bound(tool, arguments)
    started = time.monotonic()
    with anyio.fail_after(bound + 30):  # a hang: reported as a failure
        result = await client.call_tool(tool, arguments)
    took = time.monotonic() - started
    server.op = "idle"
    tally.calls[tool] += 1
    if took > tally.slowest.get(tool, (0.0, 0.0))[0]:
        tally.slowest[tool] = (took, bound)
    if took > bound:
        tally.failures.append(f"{server.name}: {tool} took {took:.1f} s, above its bound of {bound:.1f} s")
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


async def sequence(client: Client, server: Server, tally: Tally, rng: random.Random) -> None:
    """A random session an agent might run: find a plan, rent, then wait / read / wake / refund / list."""
    provider = rng.choice(["gotsms", "getatext"])
    if rng.random() < 0.15:
        tool, arguments = rng.choice(BAD_INPUTS)
        tally.bad_inputs += 1
        await call(client, server, tally, tool, **arguments)
    plans = await call(client, server, tally, "list_plans", provider=provider, max_price=str(MAX_PRICE))
    if not plans or not plans["plans"]:
        return
    plan = rng.choice(plans["plans"][:6])
    max_price = rng.choice([str(MAX_PRICE), plan["price"], "0.05"])  # 0.05: below every price, refused
    tally.rent_attempts += 1
    rented = await call(client, server, tally, "rent_number", plan_id=plan["plan_id"], max_price=max_price)
    if rented is None:
        await call(client, server, tally, "list_rentals", status="all")
        return
    rental_id = rented["rental"]["rental_id"]
    for _ in range(rng.randint(1, 4)):
        step = rng.choice(["wait", "wait", "wait", "messages", "wake", "refund", "list", "balance", "resource"])
        if step == "wait":
            await call(client, server, tally, "wait_for_code", rental_id=rental_id, timeout_seconds=rng.choice([2, 4]))
        elif step == "messages":
            await call(client, server, tally, "get_messages", rental_id=rental_id)
        elif step == "wake":
            await call(client, server, tally, "wake_up", rental_id=rental_id)
        elif step == "refund":
            await call(client, server, tally, "refund", rental_id=rental_id)
        elif step == "list":
            await call(client, server, tally, "list_rentals", status=rng.choice(["active", "all"]))
        elif step == "balance":
            await call(client, server, tally, "get_balance")
        else:
            server.op = "read_resource"
            for uri in ("smsrent://rentals/active", "smsrent://messages/recent", f"smsrent://rentals/{rental_id}"):
                read = await client.read_resource(uri)
                tally.seen.append(read.model_dump_json())
            server.op = "idle"
    if rng.random() < 0.5:
        await call(client, server, tally, "refund", rental_id=rental_id)


async def drive(client: Client, server: Server, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    while tally.sequences < plan.sequences and time.monotonic() < deadline:
        tally.sequences += 1
        tally.by_server[server.name] += 1
        await sequence(client, server, tally, rng)


@asynccontextmanager
async def stdio_session(server: Server) -> AsyncIterator[Client]:
    """A new stdio server process and a client on it; the process is a new `Life` of `server`."""
    pidfile = server.world.data_dir / f"{server.name}.pid"
    script = f'echo $$ > "{pidfile}"; exec "{sys.executable}" -m smsrent 2>>"{server.log}"'
    params = StdioServerParameters(command="/bin/sh", args=["-c", script], env=server.world.env)
    started = time.time()
    life: Life | None = None
    try:
        async with Client(params) as client:
            life = Life(int(pidfile.read_text()), started)
            server.lives.append(life)
            audit(server.world)
            yield client
    finally:
        if life is not None and life.ended is None:
            life.ended = time.time()


async def stdio_client(server: Server, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    """One client on its own stdio server; when the server is killed, a new one is started and the work goes on."""
    while tally.sequences < plan.sequences and time.monotonic() < deadline:
        with anyio.CancelScope() as scope:
            server.kill = scope
            try:
                async with stdio_session(server) as client:
                    await drive(client, server, tally, rng, plan, deadline)
            except Exception as exc:
                if not scope.cancel_called:  # not killed by us: a real failure
                    tally.failures.append(f"{server.name}: {type(exc).__name__}: {exc}")
                    return
        server.kill = None
        if scope.cancel_called and len(server.world.servers) > 1:
            await rejoin(server, rng)


async def rejoin(server: Server, rng: random.Random) -> None:
    """Before a killed server that shares its data dir starts again: every other time it stays down past a
    heartbeat (what it left is the other's to take over); else it starts as soon as a purchase of the other one
    is held by the provider (until the timeout), so that its start-up recovery meets a live purchase."""
    if rng.random() < 0.5:
        await anyio.sleep(HEARTBEAT_EVERY + 1)
        return
    sandboxes = server.world.sandboxes
    held = [sandbox.injected["slow"] for sandbox in sandboxes]
    for sandbox, purchases in zip(sandboxes, ("/api/rents", "/api/v1/rent-a-number"), strict=True):
        sandbox.inject("POST", purchases, "slow")
    with anyio.move_on_after(10):
        while [sandbox.injected["slow"] for sandbox in sandboxes] == held:  # noqa: ASYNC110 - counted, not signalled
            await anyio.sleep(0.005)


async def killer(server: Server, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    """SIGKILL the stdio server at random moments: mid-purchase (the first kill, and every other one after it,
    waits for one to be recorded in flight), mid-wait, mid-write, whatever it was doing."""
    while tally.sequences < plan.sequences and time.monotonic() < deadline - 5:
        await anyio.sleep(rng.uniform(*plan.kill_every))
        if len(server.lives) == 1 or rng.random() < 0.5:
            with anyio.move_on_after(10):
                while not buying(server):  # noqa: ASYNC110 - polled: the ledger is in another process
                    await anyio.sleep(0.001)
        life = server.running
        if server.kill is None or life is None or tally.sequences >= plan.sequences:
            continue
        tally.crashes[server.op] += 1
        life.ended = time.time()
        os.kill(life.pid, signal.SIGKILL)
        server.kill.cancel()


def buying(server: Server) -> bool:
    """Whether the server's running process has a purchase in flight (the ledger names it its owner)."""
    life = server.running
    if server.op != "rent_number" or life is None:
        return False
    query = (
        "SELECT 1 FROM purchases JOIN soak_beats ON token = owner WHERE pid = ? AND state IN ('reserved', 'uncertain')"
    )
    return bool(ledger(server.world, query, life.pid))


async def http_clients(server: Server, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(plan.http_clients):
            tg.start_soon(http_client_loop, server, tally, random.Random(rng.random()), plan, deadline)


async def http_client_loop(server: Server, tally: Tally, rng: random.Random, plan: Plan, deadline: float) -> None:
    try:
        async with http_session(server.world) as client:
            await drive(client, server, tally, rng, plan, deadline)
    except Exception as exc:
        tally.failures.append(f"{server.name}: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def http_session(world: World) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {world.secrets['SMSRENT_HTTP_TOKEN']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=90) as authorized,
        Client(streamable_http_client(f"{world.url}/mcp", http_client=authorized)) as client,
    ):
        yield client


@asynccontextmanager
async def http_server(server: Server) -> AsyncIterator[subprocess.Popen[bytes]]:
    world = server.world
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    world.url = url
    world.getatext.webhook_url = f"{url}/webhooks/getatext/{world.secrets['SMSRENT_WEBHOOK_SECRET']}"
    with server.log.open("ab") as log:
        argv = [sys.executable, "-m", "smsrent", "--http", "--port", str(port)]
        process = subprocess.Popen(argv, env=world.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # noqa: ASYNC220
    server.lives.append(Life(process.pid, time.time()))
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
                    raise RuntimeError(f"the HTTP server exited: {server.log.read_text()[-500:]}")
        audit(world)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.lives[-1].ended = time.time()


# -- The worlds -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_world(
    name: str, transport: Literal["stdio", "http"], servers: int, root: Path, seed: int, plan: Plan
) -> World:
    """A world whose `servers` share its data dir, its provider accounts and (stdio) one webhook port."""
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
    names = [name] if servers == 1 else [f"{name}-{chr(ord('a') + i)}" for i in range(servers)]
    world.servers = [Server(server, world) for server in names]
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
    if transport == "http" or servers > 1:  # the shared stdio servers: one listens, the other finds it taken
        world.env["SMSRENT_WEBHOOK_SECRET"] = keys["SMSRENT_WEBHOOK_SECRET"]
    if transport == "stdio" and servers > 1:
        port = free_port()
        world.env["SMSRENT_WEBHOOK_PORT"] = str(port)
        world.getatext.webhook_url = f"http://127.0.0.1:{port}/webhooks/getatext/{keys['SMSRENT_WEBHOOK_SECRET']}"
    return world


def audit(world: World) -> None:
    """Add the soak's audit to the world's ledger once its first server has made it, before any tool call: in one
    transaction with the processes registered so far."""
    if not world.audited:
        registered = "INSERT INTO soak_beats SELECT token, pid, heartbeat_at FROM processes;"
        with closing(sqlite3.connect(world.data_dir / "ledger.sqlite3")) as db:
            db.executescript(f"BEGIN IMMEDIATE; {AUDIT} {registered} COMMIT;")
        world.audited = True


async def watch_spend(worlds: list[World]) -> None:
    """Sample each world's net spend at its providers, to check the daily budget held at every moment."""
    while True:
        for world in worlds:
            world.peak_spend = max(world.peak_spend, world.spend())
        await anyio.sleep(0.01)


async def meet_every_hostile_body(worlds: list[World], rng: random.Random) -> None:
    """On top of chaos, inject every hostile body into the next GET and into the next POST (a purchase, a refund,
    a wake-up, a Getatext status poll) of a random world's provider: one at a time, each waited for until a
    request meets it, or for a while (one left waiting is dropped by `heal`)."""
    for fault in HOSTILE:
        for method in ("GET", "POST"):
            sandbox = rng.choice(rng.choice(worlds).sandboxes)
            met = sandbox.injected[fault]
            sandbox.inject(method, "/", fault)
            with anyio.move_on_after(15):
                while sandbox.injected[fault] == met:  # noqa: ASYNC110 - the sandbox counts, it does not signal
                    await anyio.sleep(0.1)
            await anyio.sleep(rng.uniform(0.5, 2.0))


async def settle(world: World, tally: Tally) -> None:
    """After the faults stop: let every uncertain purchase settle, and let each rental's messages sync (through
    the world's first server; every other one must still answer)."""
    async with AsyncExitStack() as stack:
        if world.transport == "http":
            clients = [await stack.enter_async_context(http_session(world))]
        else:
            clients = [await stack.enter_async_context(stdio_session(server)) for server in world.servers]
        client, server = clients[0], world.servers[0]
        with anyio.fail_after(SETTLE_AFTER + 60):
            await anyio.sleep(SETTLE_AFTER)
            while unsettled(world):
                await call(client, server, tally, "list_rentals", status="all")
                await anyio.sleep(0.5)
        listed = await call(client, server, tally, "list_rentals", status="all")
        for rental in (listed or {}).get("rentals", []):
            await call(client, server, tally, "get_messages", rental_id=rental["rental_id"])
        for each in clients:
            await each.list_tools()  # the server still answers


def ledger(world: World, query: str, *parameters: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(world.data_dir / "ledger.sqlite3")) as db:
        return db.execute(query, parameters).fetchall()


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
    shared_bought: Counter[str] = field(default_factory=Counter)  # purchases bought, by the server that made them
    orphans: int = 0  # purchases whose server was killed mid-purchase, taken over
    orphans_while_down: int = 0  # taken over while their server was down: by the other one
    listeners: int = 0  # shared servers' processes that held the webhook port
    port_taken: int = 0  # and that found it taken
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
    check_hands(world, figures)
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


def check_hands(world: World, figures: Figures) -> None:
    """Every change of a purchase's state or owner, judged by whether its owner's process was alive then: a live
    owner's purchase changes only by its own hand (settled, keeping its owner, or released as it was); a killed
    one's is only taken over (ownerless, uncertain). Takeovers are counted, and those made while the killed
    server was down (so by the other server)."""
    lives = {life.pid: (server, life) for server in world.servers for life in server.lives}
    pids = dict(ledger(world, "SELECT token, pid FROM soak_beats"))
    changes = ledger(world, "SELECT * FROM soak_purchases ORDER BY rowid")
    for purchase_id, old_state, new_state, old_owner, new_owner, at in changes:
        if old_owner is None:
            continue
        if pids.get(old_owner) not in lives:
            figures.problems.append(f"{world.name}: purchase {purchase_id} was owned by a process the soak never ran")
            continue
        server, life = lives[pids[old_owner]]
        mine = new_owner == old_owner or (new_owner is None and new_state == old_state)
        taken_over = new_owner is None and new_state == "uncertain"
        if life.alive(at) and not mine:
            figures.problems.append(
                f"{world.name}: purchase {purchase_id} of {server.name} (pid {life.pid}, alive) went from {old_state}"
                f" to {new_state}, owner {new_owner}, by another process"
            )
        elif not life.alive(at) and not taken_over:
            figures.problems.append(
                f"{world.name}: purchase {purchase_id} of {server.name} (pid {life.pid}, gone) went from {old_state}"
                f" to {new_state} without being taken over"
            )
        elif not life.alive(at):
            figures.orphans += 1
            figures.orphans_while_down += not any(later.alive(at) for later in server.lives)
    if len(world.servers) > 1:
        made = ledger(
            world,
            "SELECT DISTINCT p.purchase_id, b.pid FROM purchases AS p JOIN soak_purchases AS s USING (purchase_id)"
            " JOIN soak_beats AS b ON b.token = s.old_owner WHERE p.state = 'bought' AND s.old_state = 'reserved'",
        )
        for _, pid in made:
            figures.shared_bought[lives[pid][0].name] += 1
        port = world.env["SMSRENT_WEBHOOK_PORT"]
        for server in world.servers:
            log = server.log.read_text(errors="replace") if server.log.exists() else ""
            figures.listeners += log.count(f"Getatext webhook listener on http://127.0.0.1:{port}/")
            figures.port_taken += log.count(f"webhook port {port} is taken")


def secrets_found(worlds: list[World], tally: Tally) -> Counter[str]:
    found: Counter[str] = Counter()
    logs = "\n".join(s.log.read_text(errors="replace") for w in worlds for s in w.servers if s.log.exists())
    haystacks = [*tally.seen, *tally.failures, logs]
    for world in worlds:
        for name, value in world.secrets.items():
            found[name] += sum(text.count(value) for text in haystacks)
    return found


# -- The run --------------------------------------------------------------------------------------------------


async def soak(plan: Plan, seed: int, root: Path) -> int:
    rng = random.Random(seed)
    worlds = [
        make_world(f"stdio-{i}", "stdio", servers, root, seed + 10 * i, plan)
        for i, servers in enumerate(plan.stdio_worlds)
    ]
    worlds.append(make_world("http", "http", 1, root, seed + 100, plan))
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
                sandbox.chaos(plan.fault_rate, FAULTS + HOSTILE)
        for noisy in ("uvicorn.error", "asyncio", "smsrent.sandbox"):  # the faults make the sandboxes complain
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        http_world = worlds[-1]
        async with http_server(http_world.servers[0]) as process:
            async with anyio.create_task_group() as hostile:
                hostile.start_soon(meet_every_hostile_body, worlds, random.Random(rng.random()))
                async with anyio.create_task_group() as clients:
                    for world in worlds[:-1]:
                        for server in world.servers:
                            clients.start_soon(stdio_client, server, tally, random.Random(rng.random()), plan, deadline)
                            clients.start_soon(killer, server, tally, random.Random(rng.random()), plan, deadline)
                    clients.start_soon(
                        http_clients, http_world.servers[0], tally, random.Random(rng.random()), plan, deadline
                    )
                hostile.cancel_scope.cancel()
            for world in worlds:
                for sandbox in world.sandboxes:
                    sandbox.heal()
            async with anyio.create_task_group() as settling:
                for world in worlds:
                    settling.start_soon(settle, world, tally)
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
    faults = ", ".join(f"{k} {figures.faults[k]}" for k in FAULTS)
    hostile = ", ".join(f"{k} {figures.faults[k]}" for k in HOSTILE)
    crashes = ", ".join(f"during {k} {v}" for k, v in tally.crashes.most_common()) or "none"
    slowest = ", ".join(
        f"{tool} {took:.1f} s (bound {bound:.1f})" for tool, (took, bound) in sorted(tally.slowest.items())
    )
    stdio = sum(plan.stdio_worlds)
    shared = sum(n for n in plan.stdio_worlds if n > 1)
    rows = [
        (
            "servers / clients",
            f"{stdio} stdio ({shared} sharing a data dir) + 1 HTTP / {stdio} stdio + {plan.http_clients} HTTP clients",
        ),
        (
            "sequences run",
            f"{tally.sequences} in {elapsed:.0f} s ({', '.join(f'{k} {v}' for k, v in tally.by_server.items())})",
        ),
        ("tool calls", f"{sum(tally.calls.values())} ({sum(tally.errors.values())} tool errors: {errors})"),
        ("slowest tool calls", slowest),
        ("faults injected", f"{sum(figures.faults[k] for k in FAULTS)} ({faults})"),
        ("hostile bodies", f"{sum(figures.faults[k] for k in HOSTILE)} ({hostile})"),
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
        (
            "shared data dir",
            f"bought {' / '.join(f'{v} by {k}' for k, v in sorted(figures.shared_bought.items()))};"
            f" {figures.orphans} purchases of killed servers taken over ({figures.orphans_while_down} while their"
            " server was down, so by the other);"
            f" webhook port held {figures.listeners}, found taken {figures.port_taken}",
        ),
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

"""Replica throughput: tool calls per second and p50/p95 latency of `get_balance` and `list_rentals` under N
concurrent HTTP MCP clients, with 1 and 3 `smsrent-mcp --http` replicas on one PostgreSQL ledger, beside the bare
SDK server with one trivial tool (benchmarks/minimal_server.py `--http`), 1 and 3 processes of it.

Everything runs on this machine, on loopback: the GotSMS sandbox in a process of its own (a real provider lives
elsewhere), the replicas on one fresh PostgreSQL database (created, migrated with `smsrent-mcp migrate`, dropped at
the end) with the sandbox's credentials (not sandbox mode), and the clients in this process, spread over the
servers round-robin (no load balancer). Each client is a 2026-07-28-era `Client` over streamable HTTP calling one
tool in a loop; a call's latency is measured in the client, from the call to its result. CPU is each process's
user+system time over the window, in cores (db: the PostgreSQL backends serving the benchmark's database; other:
what the rest of the machine used meanwhile, for this machine may run other work).

    python benchmarks/cluster.py --database-url postgresql://root@127.0.0.1:5432/test   # about 4 minutes
    python benchmarks/cluster.py --quick ...                                             # a smoke run

The database URL (a role that may create databases) defaults to SMSRENT_TEST_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx2
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from delivery import RICH, TIMING, call, clean_env, free_port, percentile, rent
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
RENTALS = 5  # what list_rentals lists (and refreshes from the provider) at each call
Groups = dict[str, list[int]]  # the processes whose CPU is reported, by group
GROUPS = ("servers", "client", "sandbox", "db", "other")  # other: the rest of the machine


@dataclass(frozen=True)
class Plan:
    clients: tuple[int, ...]
    warmup: float
    window: float


FULL = Plan(clients=(1, 8, 32), warmup=2.0, window=8.0)
QUICK = Plan(clients=(4,), warmup=0.5, window=1.5)


@dataclass(frozen=True)
class Setup:
    """What serves: `count` processes of smsrent or of the bare server, and the tools to measure on them."""

    name: str
    count: int
    tools: tuple[tuple[str, dict[str, Any]], ...]

    @property
    def bare(self) -> bool:
        return self.name == "bare SDK"

    @property
    def label(self) -> str:
        return f"{self.name} x{self.count}"


BARE_TOOLS = (("echo", {"text": "hello"}),)
SMSRENT_TOOLS = (("get_balance", {}), ("list_rentals", {"status": "all"}))
SETUPS = (
    Setup("bare SDK", 1, BARE_TOOLS),
    Setup("bare SDK", 3, BARE_TOOLS),
    Setup("smsrent", 1, SMSRENT_TOOLS),
    Setup("smsrent", 3, SMSRENT_TOOLS),
)


@dataclass(frozen=True)
class Cell:
    setup: Setup
    tool: str
    clients: int
    latencies: list[float]
    window: float
    cpu: dict[str, float]  # cores used over the window, by group (GROUPS)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.window


# -- Processes and their CPU ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime and stime, fields 14 and 15 of stat(5)


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine used so far (all but idle and I/O wait, from /proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def database_pids(database_url: str) -> list[int]:
    """The backends serving the benchmark's database (the replicas' pools), read as the same role."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
        ).fetchall()
    return [pid for (pid,) in rows]


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on `server_url`'s server, dropped afterwards (with whatever still connects to it)."""
    name = f"smsrent_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def listening(port: int) -> None:
    with anyio.fail_after(30):
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            await anyio.sleep(0.05)


@asynccontextmanager
async def processes(argvs: list[list[str]], env: dict[str, str], work: Path) -> AsyncIterator[list[int]]:
    """The servers of `argvs` (each ends with its port), once every one accepts connections; yields their pids."""
    started: list[anyio.abc.Process] = []
    try:
        for argv in argvs:
            with (work / f"server-{argv[-1]}.log").open("wb") as log:
                started.append(await anyio.open_process(argv, env=env, stderr=log))
            await listening(int(argv[-1]))
        yield [process.pid for process in started]
    finally:
        for process in started:
            process.terminate()
        with anyio.fail_after(20):
            for process in started:
                await process.wait()


# -- One measurement ------------------------------------------------------------------------------------------


async def measure(
    urls: list[str], tool: str, arguments: dict[str, Any], clients: int, plan: Plan, pids: Callable[[], Groups]
) -> tuple[list[float], dict[str, float]]:
    """`clients` clients (client i on server i mod len(urls)) call `tool` in a loop: the latencies of the calls
    made within the window after a warm-up, and the cores each group of processes (`pids`) used meanwhile."""
    latencies: list[float] = []
    window: list[float] = []  # its start, once the warm-up is over

    async def loop(client: Client) -> None:
        while True:
            began = time.perf_counter()
            result = await client.call_tool(tool, arguments)
            ended = time.perf_counter()
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
            if window and began >= window[0]:
                latencies.append(ended - began)

    def cpu(groups: Groups) -> dict[str, float]:
        used = {group: sum(map(cpu_seconds, group_pids)) for group, group_pids in groups.items()}
        return {**used, "client": own_cpu_seconds(), "machine": machine_cpu_seconds()}

    async with AsyncExitStack() as stack:
        opened = []
        for n in range(clients):
            http = await stack.enter_async_context(httpx2.AsyncClient(timeout=60))
            transport = streamable_http_client(f"{urls[n % len(urls)]}/mcp", http_client=http)
            opened.append(await stack.enter_async_context(Client(transport)))
        async with anyio.create_task_group() as tg:
            for client in opened:
                tg.start_soon(loop, client)
            await anyio.sleep(plan.warmup)
            groups = pids()
            before = cpu(groups)
            window.append(time.perf_counter())
            await anyio.sleep(plan.window)
            after = cpu(groups)
            tg.cancel_scope.cancel()
    # A call running when the window closed is not counted: it did not end in it.
    cores = {group: (after[group] - before[group]) / plan.window for group in after}
    cores["other"] = max(0.0, cores.pop("machine") - sum(cores.values()))  # work that is not this benchmark's
    return latencies, cores


# -- The run --------------------------------------------------------------------------------------------------


def serve_sandbox(port: int) -> None:
    """The GotSMS sandbox with a deep balance on 127.0.0.1:`port` (run in a process of its own)."""
    sandbox = GotSmsSandbox(timing=TIMING, balance=RICH)

    async def forever() -> None:
        async with serve_loopback(sandbox.app, port):
            await anyio.sleep_forever()

    anyio.run(forever)


async def stock(url: str) -> None:
    """Make sure the ledger holds RENTALS rentals for list_rentals to list (renting the missing ones)."""
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        listed = await call(client, "list_rentals", status="all")
        await rent(client, "gotsms", RENTALS - listed["count"])


async def run_setup(setup: Setup, plan: Plan, env: dict[str, str], work: Path, others: Groups) -> list[Cell]:
    ports = [free_port() for _ in range(setup.count)]
    if setup.bare:
        argvs = [[sys.executable, str(HERE / "minimal_server.py"), "--http", str(port)] for port in ports]
    else:
        argvs = [[sys.executable, "-m", "smsrent", "--http", "--port", str(port)] for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    cells = []
    print(f"{setup.label} ...", file=sys.stderr)
    async with processes(argvs, env, work) as servers:
        if not setup.bare:
            await stock(urls[0])

        def pids() -> Groups:
            database = [] if setup.bare else database_pids(env["SMSRENT_DATABASE_URL"])
            return {"servers": servers, **others, "db": database}

        for tool, arguments in setup.tools:
            for clients in plan.clients:
                latencies, cpu = await measure(urls, tool, arguments, clients, plan, pids)
                cells.append(Cell(setup, tool, clients, latencies, plan.window, cpu))
    return cells


async def main(plan: Plan, server_url: str) -> int:
    load = os.getloadavg()[0]  # other work on the machine takes cores from the figures
    with tempfile.TemporaryDirectory() as work, fresh_database(server_url) as database_url:
        sandbox_port = free_port()
        sandbox = await anyio.open_process([sys.executable, __file__, "--serve-sandbox", str(sandbox_port)])
        try:
            await listening(sandbox_port)
            env = clean_env(
                work,
                SMSRENT_DATABASE_URL=database_url,
                GOTSMS_API_TOKEN=GotSmsSandbox.token,
                GOTSMS_BASE_URL=f"http://127.0.0.1:{sandbox_port}/api",
            )
            await anyio.run_process([sys.executable, "-m", "smsrent", "migrate"], env=env)
            cells = []
            for setup in SETUPS:
                cells += await run_setup(setup, plan, env, Path(work), {"sandbox": [sandbox.pid]})
        finally:
            sandbox.terminate()
            with anyio.fail_after(20):
                await sandbox.wait()
    report(plan, cells, load)
    return 0


def report(plan: Plan, cells: list[Cell], load: float) -> None:
    bare = {(c.setup.count, c.clients): c.rate for c in cells if c.setup.bare}
    print(
        f"\nTool calls under N concurrent HTTP clients ({os.cpu_count()} cores, load average {load:.2f} before the"
        f" run; {plan.window:g} s windows after {plan.warmup:g} s of warm-up; latency in the client)"
    )
    print(table_row("", "tool", ["N", "calls/s", "p50 ms", "p95 ms", "vs bare", *GROUPS]))
    for cell in cells:
        ratio = "" if cell.setup.bare else f"{cell.rate / bare[(1, cell.clients)]:.2f}x"
        values = [
            str(cell.clients),
            f"{cell.rate:.0f}",
            f"{1000 * statistics.median(cell.latencies):.1f}",
            f"{1000 * percentile(cell.latencies, 0.95):.1f}",
            ratio,
            *(f"{cell.cpu[group]:.2f}" for group in GROUPS),
        ]
        print(table_row(cell.setup.label, cell.tool, values))
    print(
        "\nvs bare: calls/s against one bare SDK process at the same N. servers, client, sandbox, db: CPU cores"
        " used (user+system) over the window (the bare servers use no sandbox or database); other: the cores"
        " the rest of the machine used meanwhile."
    )


def table_row(label: str, tool: str, values: list[str]) -> str:
    return f"  {label:<12}{tool:<14}" + "".join(f"{v:>9}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one client count and short windows (a smoke run)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SMSRENT_TEST_DATABASE_URL"),
        help="a PostgreSQL server and a role that may create databases (default: SMSRENT_TEST_DATABASE_URL)",
    )
    parser.add_argument("--serve-sandbox", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_sandbox is not None:
        serve_sandbox(options.serve_sandbox)
    elif not options.database_url:
        sys.exit("cluster.py needs a PostgreSQL server: pass --database-url or set SMSRENT_TEST_DATABASE_URL")
    else:
        sys.exit(anyio.run(main, QUICK if options.quick else FULL, options.database_url))

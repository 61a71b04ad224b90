"""Replicas that behave as one: three real `smsrent-mcp --http` processes on one PostgreSQL database and one GotSMS
sandbox on loopback (the helpers of test_replicas). One of them polls the account; a code it polls reaches a
waiter and a resource subscriber on the others, with the provider's listing read no more than one poller reads
it; when the leader is killed, another takes over and codes still arrive. And a replica whose database stops
refuses purchases in one sentence, answers 503 on /healthz, and serves again (and polls again) once the database
is back."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.server.subscriptions import ResourceUpdated
from pydantic import SecretStr

from smsrent.domain.errors import LedgerUnavailable
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger.postgres.migrations import migrate
from tests.e2e.process import server_env
from tests.e2e.test_replicas import Replicas, Served, connect, day_plan, replicas, server
from tests.mcp import text_of
from tests.postgres import own_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.postgres]

MESSAGES = "/api/messages"
WATCHED = 6.0  # seconds the listing reads are counted for


async def health(served: Served) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"{served.base}/healthz")
    return {"code": answer.status_code, **answer.json()}


async def leader(r: Replicas, among: list[int] | None = None) -> int:
    """The index of the replica that polls GotSMS, once exactly one of `among` (default: all) does."""
    among = list(range(len(r.servers))) if among is None else among
    with anyio.fail_after(30):
        while True:
            polls = [n for n in among if "gotsms" in (await health(r.servers[n]))["polls"]]
            if len(polls) == 1:
                return polls[0]
            await anyio.sleep(0.1)


async def rent(client: Client, sandbox: GotSmsSandbox) -> str:
    plan_id, price = day_plan(sandbox)
    result = await client.call_tool("rent_number", {"plan_id": plan_id, "max_price": str(price)})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return str(result.structured_content["rental"]["rental_id"])


async def wait_for_code(client: Client, rental_id: str, seconds: int = 40) -> dict[str, Any]:
    result = await client.call_tool("wait_for_code", {"rental_id": rental_id, "timeout_seconds": seconds})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def listing_reads(sandbox: GotSmsSandbox, since: float, until: float) -> int:
    return sum(
        1 for at, method, path in sandbox.requests if (method, path) == ("GET", MESSAGES) and since <= at < until
    )


async def test_a_code_polled_by_the_leader_reaches_a_waiter_and_a_subscriber_on_other_replicas(
    tmp_path: Path, database_url: SecretStr, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Waits on all three replicas read the listing no more than one poller does (its fastest schedule: a tick a
    second); the code the leader polls returns to a follower's `wait_for_code` and a subscriber on the other
    follower hears of it."""
    async with replicas(tmp_path, database_url, gotsms_sandbox, gotsms_sandbox.app) as r:
        lead = await leader(r)
        waiter, subscriber = (n for n in range(3) if n != lead)
        rentals = [await rent(r.clients[n], gotsms_sandbox) for n in range(3)]
        uri = f"smsrent://rentals/{rentals[waiter]}"
        got: dict[str, Any] = {}
        heard = anyio.Event()

        async def wait(n: int) -> None:
            with anyio.move_on_after(WATCHED + 3):  # the others wait only while the reads are counted
                got[rentals[n]] = await wait_for_code(r.clients[n], rentals[n])

        async with r.clients[subscriber].listen(resource_subscriptions=[uri]) as subscription:

            async def pump() -> None:
                async for event in subscription:
                    if isinstance(event, ResourceUpdated) and event.uri == uri:
                        heard.set()

            async def wait_for_the_code() -> None:
                got[rentals[waiter]] = await wait_for_code(r.clients[waiter], rentals[waiter])

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump)
                    tg.start_soon(wait, lead)
                    tg.start_soon(wait, subscriber)
                    tg.start_soon(wait_for_the_code)
                    await anyio.sleep(1.0)  # every wait has started
                    since = time.time()  # the sandbox stamps its requests with this clock
                    await anyio.sleep(WATCHED)
                    reads = listing_reads(gotsms_sandbox, since, time.time())
                    gotsms_sandbox.deliver(rentals[waiter].partition(":")[2], "Your code is 271828", "271828")
                    await heard.wait()
                    while rentals[waiter] not in got:
                        await anyio.sleep(0.05)
                    tg.cancel_scope.cancel()
    assert reads <= WATCHED + 2, reads  # one poller's worth: three would read about three times as often
    assert got[rentals[waiter]]["outcome"] == "code_received"
    assert got[rentals[waiter]]["code"] == "271828"


async def test_when_the_leader_is_killed_another_replica_leads_and_codes_still_arrive(
    tmp_path: Path, database_url: SecretStr, gotsms_sandbox: GotSmsSandbox
) -> None:
    async with replicas(tmp_path, database_url, gotsms_sandbox, gotsms_sandbox.app) as r:
        lead = await leader(r)
        waiter, other = (n for n in range(3) if n != lead)
        rental_id = await rent(r.clients[other], gotsms_sandbox)
        r.servers[lead].process.send_signal(signal.SIGKILL)
        await r.servers[lead].process.wait()
        gotsms_sandbox.deliver(rental_id.partition(":")[2], "Your code is 314159", "314159")
        with anyio.fail_after(30):  # generous: the benchmark measures the real figure
            result = await wait_for_code(r.clients[waiter], rental_id)
            successor = await leader(r, [waiter, other])
    assert (result["outcome"], result["code"]) == ("code_received", "314159")
    assert successor in (waiter, other)


async def test_a_replica_whose_database_stops_refuses_purchases_and_serves_again_once_it_is_back(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    with own_server() as database:
        await migrate(database.url)
        async with serve_loopback(gotsms_sandbox.app) as provider:
            env = server_env(
                tmp_path,
                SMSRENT_DATABASE_URL=database.url.get_secret_value(),
                GOTSMS_API_TOKEN=gotsms_sandbox.token,
                GOTSMS_BASE_URL=f"{provider}/api",
                SMSRENT_LOG_LEVEL="INFO",
            )
            async with server(env, tmp_path / "server.log") as served, connect(served) as client:
                before = await health(served)
                database.stop()
                down = await health(served)
                plan_id, price = day_plan(gotsms_sandbox)
                refused = await client.call_tool("rent_number", {"plan_id": plan_id, "max_price": str(price)})
                database.start()
                with anyio.fail_after(60):
                    while (back := await health(served))["code"] != 200:
                        await anyio.sleep(0.2)
                rented = await rent(client, gotsms_sandbox)
                gotsms_sandbox.deliver(rented.partition(":")[2], "Your code is 161803", "161803")
                with anyio.fail_after(30):  # it leads again, and polls
                    code = await wait_for_code(client, rented)
                    while "gotsms" not in (await health(served))["polls"]:
                        await anyio.sleep(0.1)
                alive = served.process.returncode is None
    assert (before["code"], before["status"], before["database"]) == (200, "ok", "ok")
    assert before["polls"] == ["gotsms"]
    assert (down["code"], down["status"], down["database"]) == (503, "unavailable", "unreachable")
    assert refused.is_error
    assert text_of(refused).endswith(f"rent_number: {LedgerUnavailable().message}")
    assert back["database"] == "ok"
    assert (code["outcome"], code["code"]) == ("code_received", "161803")
    assert alive
    assert len(gotsms_sandbox.rents) == 1  # the refused purchase reached no provider

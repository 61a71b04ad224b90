"""A purchase awaiting the human's OK resumes on any replica that shares `SMSRENT_REQUEST_STATE_KEYS`.

Two real `smsrent-mcp --http` processes with data dirs of their own (the confirmation carries no ledger state), their
real adapters pointed at one GotSMS sandbox on loopback; every purchase asks (SMSRENT_CONFIRM_ABOVE=0). A 2026-era
client gets the `InputRequiredResult` from replica A and answers it, with A's sealed `requestState`, on replica B.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ElicitResult, InputRequiredResult

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.auth import SPENDER_KEY, bearer, two_agents_file
from tests.e2e.process import server_env
from tests.e2e.test_replicas import day_plan, refusal, run, server
from tests.mcp import posts, text_of
from tests.mcp.served import TOKEN

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

OLD, NEW, OTHER = (secrets.token_hex(32) for _ in range(3))
REJECTED = "requestState rejected on tools/call"


@dataclass
class Replica:
    base: str
    log: Path

    def rejections(self) -> list[str]:
        """The reasons this replica logged for refusing a request state (the wire only says it is invalid)."""
        return [line.split(f"{REJECTED}: ", 1)[1] for line in self.log.read_text().splitlines() if REJECTED in line]


@asynccontextmanager
async def two_replicas(
    tmp_path: Path, sandbox: GotSmsSandbox, keys: Sequence[str | None], **env: str
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replicas A and B, each with its own data dir and its `SMSRENT_REQUEST_STATE_KEYS` (None: unset)."""
    await anyio.Path(tmp_path).mkdir(exist_ok=True)
    async with serve_loopback(sandbox.app) as provider, AsyncExitStack() as stack:
        replicas = []
        for name, ring in zip("ab", keys, strict=True):
            replica_env = server_env(
                tmp_path / name,
                GOTSMS_API_TOKEN=sandbox.token,
                GOTSMS_BASE_URL=f"{provider}/api",
                SMSRENT_CONFIRM_ABOVE="0",
                **({} if ring is None else {"SMSRENT_REQUEST_STATE_KEYS": ring}),
                **env,
            )
            log = tmp_path / f"{name}.log"
            replicas.append(Replica((await stack.enter_async_context(server(replica_env, log))).base, log))
        a, b = replicas
        yield a, b


@asynccontextmanager
async def asking(replica: Replica, credential: str | None = None) -> AsyncIterator[Client]:
    """A 2026-era client that says it can elicit; the test answers each question itself, on whichever replica."""

    async def unused(_ctx: object, _params: object) -> ElicitResult:
        raise AssertionError("the test answers input requests itself")

    headers = bearer(credential) if credential else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{replica.base}/mcp", http_client=http), elicitation_callback=unused) as client,
    ):
        yield client


def rent_args(sandbox: GotSmsSandbox) -> dict[str, Any]:
    plan_id, price = day_plan(sandbox)
    return {"plan_id": plan_id, "max_price": str(price)}


async def ask(replica: Replica, rent: dict[str, Any], credential: str | None = None) -> InputRequiredResult:
    """Start a purchase on `replica`: it asks the human, and nothing is bought yet."""
    async with asking(replica, credential) as client:
        asked = await client.session.call_tool("rent_number", rent, allow_input_required=True)
    assert isinstance(asked, InputRequiredResult), asked
    assert asked.request_state
    return asked


async def answer(client: Client, rent: dict[str, Any], asked: InputRequiredResult) -> CallToolResult:
    """Answer `asked` with the human's OK, echoing its sealed request state."""
    (request_id,) = asked.input_requests or {}
    approval = {request_id: ElicitResult(action="accept", content={"approve": True})}
    result = await client.session.call_tool(
        "rent_number", rent, input_responses=approval, request_state=asked.request_state
    )
    assert isinstance(result, CallToolResult), result
    return result


async def approve(
    replica: Replica, rent: dict[str, Any], asked: InputRequiredResult, credential: str | None = None
) -> CallToolResult:
    async with asking(replica, credential) as client:
        return await answer(client, rent, asked)


async def refuses(
    replica: Replica, rent: dict[str, Any], asked: InputRequiredResult, credential: str | None = None
) -> None:
    """`replica` refuses the answer to `asked` as the SDK refuses a request state it cannot trust."""
    async with asking(replica, credential) as client:
        with pytest.raises(MCPError) as caught:
            await answer(client, rent, asked)
    assert caught.value.error.message == "Invalid or expired requestState"
    assert caught.value.error.data == {"reason": "invalid_request_state"}


async def test_a_confirmation_asked_on_one_replica_completes_on_another(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    rent = rent_args(gotsms_sandbox)
    async with two_replicas(tmp_path, gotsms_sandbox, [OLD, OLD]) as (a, b):
        asked = await ask(a, rent)
        assert posts(gotsms_sandbox) == []
        bought = await approve(b, rent, asked)
    assert not bought.is_error, text_of(bought)
    assert bought.structured_content is not None
    rental_id = bought.structured_content["rental"]["rental_id"]
    assert [rental_id] == [f"gotsms:{rent}" for rent in gotsms_sandbox.rents]
    assert posts(gotsms_sandbox) == ["/api/rents"]


async def test_another_replicas_state_is_refused_under_different_keys_and_without_any(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Different keys, and no keys at all (each process seals under a key of its own, as before the variable): the
    state does not unseal, nothing is bought, and the replica logs why."""
    rent = rent_args(gotsms_sandbox)
    async with two_replicas(tmp_path, gotsms_sandbox, [OLD, OTHER]) as (a, b):
        await refuses(b, rent, await ask(a, rent))
        rejected_under_other_keys = b.rejections()
    async with two_replicas(tmp_path / "unset", gotsms_sandbox, [None, None]) as (a, b):
        await refuses(b, rent, await ask(a, rent))
        rejected_without_keys = b.rejections()
    assert rejected_under_other_keys == rejected_without_keys == ["unknown key"]
    assert posts(gotsms_sandbox) == []


async def test_after_a_rotation_the_old_key_still_unseals_and_the_new_one_seals(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """A runs the old ring, B the rotated one (new first, old second): A's state completes on B; B seals under the
    new key, which A (not rotated yet) cannot unseal."""
    rent = rent_args(gotsms_sandbox)
    async with two_replicas(tmp_path, gotsms_sandbox, [OLD, f"{NEW},{OLD}"]) as (a, b):
        bought = await approve(b, rent, await ask(a, rent))
        await refuses(a, rent, await ask(b, rent))
        rejections = a.rejections()
    assert not bought.is_error, text_of(bought)
    assert rejections == ["unknown key"]
    assert posts(gotsms_sandbox) == ["/api/rents"]


async def test_a_state_sealed_for_one_agent_cannot_be_resumed_by_another_credential_on_another_replica(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    rent = rent_args(gotsms_sandbox)
    agents = two_agents_file(tmp_path / "agents.toml")
    auth = {"SMSRENT_HTTP_TOKEN": TOKEN, "SMSRENT_AGENTS_FILE": str(agents)}
    async with two_replicas(tmp_path, gotsms_sandbox, [OLD, OLD], **auth) as (a, b):
        asked = await ask(a, rent, SPENDER_KEY)
        await refuses(b, rent, asked, TOKEN)
        rejections = b.rejections()
        assert posts(gotsms_sandbox) == []
        bought = await approve(b, rent, asked, SPENDER_KEY)
    assert rejections == ["principal"]
    assert not bought.is_error, text_of(bought)
    assert posts(gotsms_sandbox) == ["/api/rents"]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (f"{OLD},too-short-to-seal", "key 2 of 2 is 17 bytes and each needs at least 32"),
        (f"{OLD},{NEW},{OLD}", "key 3 repeats an earlier one"),
    ],
    ids=["short", "repeated"],
)
def test_an_unusable_key_stops_the_start_with_one_line_naming_the_variable(
    tmp_path: Path, keys: str, problem: str
) -> None:
    line = refusal(run(["--http", "--port", "9"], server_env(tmp_path, SMSRENT_REQUEST_STATE_KEYS=keys)))
    assert line.startswith("smsrent-mcp: invalid configuration: SMSRENT_REQUEST_STATE_KEYS: ")
    assert problem in line
    assert OLD not in line
    assert NEW not in line

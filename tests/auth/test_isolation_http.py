"""Several agents on one HTTP server, over real loopback HTTP on both protocol eras: each sees and acts on its own
rentals only (another agent's rental answers exactly like an unknown one, on every tool, resource, subscription,
completion and the prompt), an admin sees and acts on every agent's, and each agent's budget and price cap apply
under the server's."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPDeprecationWarning, MCPError
from mcp.types import (
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    TextContent,
)

from smsrent.mcp.app import App
from smsrent.sandbox.base import SandboxServer
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger import Ledger
from tests.auth import ALICE_KEY, BOB_KEY, BOSS_KEY, LOOKER_KEY, agents_app
from tests.mcp import fails, local_id, ok, posts, wait_while
from tests.mcp.resources import Updates, read_json, subscribed
from tests.mcp.served import TOKEN, authorized, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ACTIVE = "smsrent://rentals/active"
RECENT = "smsrent://messages/recent"
TEMPLATE_REF = ResourceTemplateReference(type="ref/resource", uri="smsrent://rentals/{rental_id}")
PROMPT_REF = PromptReference(type="ref/prompt", name="verify_signup")
D = Decimal


@pytest.fixture
def app(tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox) -> App:
    return agents_app(tmp_path, gotsms_sandbox, getatext_sandbox, daily_budget=D("2.00"), max_price=D("5"))


def ledger_of(app: App) -> Ledger:
    return app.runtime.require().rentals.ledger


async def rent(client: Client, **arguments: Any) -> dict[str, Any]:
    rental: dict[str, Any] = (await ok(client, "rent_number", **arguments))["rental"]
    return rental


def unknown_like(rental_id: str) -> str:
    """A well-formed id of the same provider that no one rented."""
    provider, _, local = rental_id.rpartition(":")
    return f"{provider}:{'1' * 8}{local[8:]}" if provider == "gotsms" else f"{provider}:9{local}"


def same_answer(theirs: str, unknown: str, for_theirs: str, for_unknown: str) -> bool:
    """Whether two answers are the same but for the id each was asked about."""
    return for_theirs.replace(theirs, "<id>") == for_unknown.replace(unknown, "<id>")


def changing(*sandboxes: SandboxServer) -> list[list[str]]:
    """The requests that change something at each provider (Getatext reads a rental's status by POST too)."""
    return [[path for path in posts(sandbox) if not path.endswith("/rental-status")] for sandbox in sandboxes]


# Every rental tool, with what it needs beside the rental id.
RENTAL_TOOLS: dict[str, dict[str, Any]] = {
    "get_messages": {},
    "wait_for_code": {"timeout_seconds": 1},
    "wake_up": {},
    "refund": {},
    "extend_rental": {"max_price": "1"},
    "set_auto_renew": {"enabled": False},
    "finish_rental": {},
}


async def test_another_agents_rental_answers_exactly_like_an_unknown_one(
    app: App, mode: str, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with served(app) as base:
        async with authorized(base, mode, BOB_KEY) as renter:
            his = [
                await rent(renter, service="Telegram", provider="gotsms", country="USA", max_price="1"),
                await rent(renter, plan_id="getatext:google", max_price="0.3"),
            ]
            gotsms_sandbox.deliver(local_id(his[0]["rental_id"]), "Your code is 551177", "551177")
            assert (await ok(renter, "get_messages", rental_id=his[0]["rental_id"]))["count"] == 1
            assert (await ok(renter, "list_rentals", status="all"))["count"] == 2
            assert "agent" not in (await ok(renter, "list_rentals"))["rentals"][0]  # only admins see whose
            completed = (await renter.complete(TEMPLATE_REF, {"name": "rental_id", "value": ""})).completion
            assert sorted(completed.values) == sorted(r["rental_id"] for r in his)
            assert len((await read_json(renter, RECENT))["messages"]) == 1
        changes = changing(gotsms_sandbox, getatext_sandbox)

        async with authorized(base, mode, ALICE_KEY) as other:
            # Tools: the same answer, word for word, as for an id no one rented; nothing is changed at a provider.
            for rental in his:
                theirs, unknown = rental["rental_id"], unknown_like(rental["rental_id"])
                for tool, extra in RENTAL_TOOLS.items():
                    for_theirs = await fails(other, tool, rental_id=theirs, **extra)
                    for_unknown = await fails(other, tool, rental_id=unknown, **extra)
                    assert same_answer(theirs, unknown, for_theirs, for_unknown), (tool, for_theirs, for_unknown)
                assert f"No rental {theirs} is known here" in await fails(other, "get_messages", rental_id=theirs)
                # The rental resource: the same MCP error.
                errors = []
                for rental_id in (theirs, unknown):
                    with pytest.raises(MCPError) as raised:
                        await other.read_resource(f"smsrent://rentals/{rental_id}")
                    errors.append((raised.value.error.code, raised.value.error.message.replace(rental_id, "<id>")))
                assert errors[0] == errors[1]
            # Lists, resources, completion and the prompt show none of his.
            assert (await ok(other, "list_rentals", status="all"))["count"] == 0
            assert (await read_json(other, ACTIVE))["count"] == 0
            assert (await read_json(other, RECENT))["messages"] == []
            completed = (await other.complete(TEMPLATE_REF, {"name": "rental_id", "value": ""})).completion
            assert completed.values == []
            assert (
                await other.complete(PROMPT_REF, {"name": "service", "value": "te"})
            ).completion.values  # still works
            prompt = await other.get_prompt("verify_signup", {"service": "Telegram"})
            text = " ".join(m.content.text for m in prompt.messages if isinstance(m.content, TextContent))
            assert "Telegram" in text
            assert not any(r["rental_id"] in text or r["phone"] in text for r in his)
        assert changing(gotsms_sandbox, getatext_sandbox) == changes

        async with authorized(base, mode, BOB_KEY) as renter:  # the other agent changed nothing of his
            listed = (await ok(renter, "list_rentals"))["rentals"]
            assert sorted(r["rental_id"] for r in listed) == sorted(r["rental_id"] for r in his)
            assert {r["status"] for r in listed} == {"active"}


async def test_an_admin_sees_every_rental_with_its_agent_and_refunds_anothers(
    app: App, mode: str, getatext_sandbox: GetatextSandbox
) -> None:
    async with served(app) as base:
        async with authorized(base, mode, ALICE_KEY) as alice:
            hers = await rent(alice, plan_id="getatext:telegram", max_price="0.5")
        async with authorized(base, mode, BOB_KEY) as bob:
            his = await rent(bob, plan_id="getatext:google", max_price="0.5")
        async with authorized(base, mode, BOSS_KEY) as boss:
            listed = {r["rental_id"]: r.get("agent") for r in (await ok(boss, "list_rentals"))["rentals"]}
            assert listed == {hers["rental_id"]: "alice", his["rental_id"]: "bob"}
            detail = await read_json(boss, f"smsrent://rentals/{hers['rental_id']}")
            assert detail["rental"]["agent"] == "alice"
            refunded = await ok(boss, "refund", rental_id=hers["rental_id"])
            assert refunded["rental"]["agent"] == "alice"
            assert refunded["rental"]["status"] == "cancelled"  # how Getatext shows a refund
            assert refunded["refunded"] == "0.40"
        async with authorized(base, mode, TOKEN) as owner:  # the owner is an admin
            listed = {
                r["rental_id"]: r.get("agent") for r in (await ok(owner, "list_rentals", status="all"))["rentals"]
            }
            assert listed == {hers["rental_id"]: "alice", his["rental_id"]: "bob"}
        async with authorized(base, mode, ALICE_KEY) as alice:
            (after,) = (await ok(alice, "list_rentals", status="all"))["rentals"]
            assert (after["rental_id"], after["status"]) == (hers["rental_id"], "cancelled")
        # The refund is credited to alice's purchase: her budget has room again.
        assert await ledger_of(app).committed("alice") == 0
        assert await ledger_of(app).committed("bob") == D("0.30")


async def test_an_agents_budget_and_cap_refuse_under_the_servers_and_the_servers_caps_them_all(
    app: App, getatext_sandbox: GetatextSandbox
) -> None:
    """alice: 1.00 a day, 1.00 a purchase; bob: the server's 2.00 a day only."""
    async with served(app) as base:
        async with authorized(base, "legacy", ALICE_KEY) as alice:
            hers = await rent(alice, plan_id="getatext:telegram", max_price="0.5")  # 0.40 committed
            refused = await fails(alice, "rent_number", plan_id="getatext:whatsapp", max_price="0.7")
            assert refused.removeprefix("Error executing tool rent_number: ").startswith(
                "Refused: this purchase may cost up to 0.70 USD, and 0.40 USD of agent alice's 1.00 USD daily budget"
                " (its daily_budget in the agents file (SMSRENT_AGENTS_FILE), else SMSRENT_AGENT_DAILY_BUDGET;"
                " rolling 24 h) is already spent or reserved; nothing was bought."
            )
            again = await fails(alice, "extend_rental", rental_id=hers["rental_id"], max_price="0.7")  # a re-rent
            assert "and 0.40 USD of agent alice's 1.00 USD daily budget" in again
            capped = await fails(alice, "rent_number", plan_id="getatext:whatsapp", max_price="1.5")
            assert "above agent alice's per-purchase cap of 1.00 USD" in capped
            assert (await ok(alice, "get_balance", provider="getatext"))["budget_left"] == "0.60"
        async with authorized(base, "legacy", BOB_KEY) as bob:  # alice's budget is spent, the server's is not
            await rent(bob, plan_id="getatext:whatsapp", max_price="0.7")  # 0.95 committed in all
            assert (await ok(bob, "get_balance", provider="getatext"))["budget_left"] == "1.05"
            refused = await fails(bob, "rent_number", service="Telegram", provider="gotsms", max_price="1.1")
            assert "of the 2.00 USD daily budget (SMSRENT_DAILY_BUDGET, rolling 24 h)" in refused
            assert "agent bob" not in refused
            await rent(bob, plan_id="getatext:whatsapp", max_price="0.6")  # 1.50 in all
        async with authorized(base, "legacy", ALICE_KEY) as alice:  # the server's budget caps alice too
            assert (await ok(alice, "get_balance"))["budget_left"] == "0.50"
        ledger = ledger_of(app)
        assert [(r.agent, r.amount) for r in await ledger.refusals()] == [
            ("alice", D("0.7")),
            ("alice", D("0.7")),
            ("alice", D("1.5")),
            ("bob", D("1.1")),
        ]
        bought = [(c.agent, c.charged) for c in await ledger.charges() if c.state == "bought"]
        assert bought == [("alice", D("0.40")), ("bob", D("0.55")), ("bob", D("0.55"))]
    assert [path for _, method, path in getatext_sandbox.requests if method == "POST"] == ["/api/v1/rent-a-number"] * 3


# -- Subscriptions --------------------------------------------------------------------------------------------


def listening(base: str, mode: str, key: str, uris: list[str]) -> AbstractAsyncContextManager[tuple[Client, Updates]]:
    """An HTTP client of `key` subscribed to `uris`."""
    return subscribed(functools.partial(authorized, base, mode, key), mode, uris)


async def test_subscribers_hear_only_of_their_own_rentals(app: App, mode: str, gotsms_sandbox: GotSmsSandbox) -> None:
    async with served(app) as base:
        async with authorized(base, mode, BOB_KEY) as bob:
            his = await rent(bob, service="Telegram", provider="gotsms", country="USA", max_price="1")
        uris = [f"smsrent://rentals/{his['rental_id']}", ACTIVE, RECENT]
        async with (
            listening(base, mode, BOB_KEY, uris) as (bob, (to_bob, bob_hears)),
            listening(base, mode, ALICE_KEY, uris) as (alice, (to_alice, alice_hears)),
            listening(base, mode, BOSS_KEY, uris) as (_, (to_boss, boss_hears)),
        ):
            rent_id = local_id(his["rental_id"])
            got = await wait_while(bob, his["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, "Code 4242", "4242"))
            assert got.structured_content is not None
            assert got.structured_content["code"] == "4242"
            await bob_hears({uris[0], RECENT})
            await boss_hears({uris[0], RECENT})
            await rent(bob, plan_id="getatext:google", max_price="0.5")
            await bob_hears({ACTIVE})
            await boss_hears({ACTIVE})
            await anyio.sleep(0.3)  # time for a notification to alice to arrive, were one sent
            assert to_alice == []
            heard_by_bob = len(to_bob)
            await rent(alice, plan_id="getatext:google", max_price="0.5")
            await alice_hears({ACTIVE})
            await anyio.sleep(0.3)
            assert len(to_bob) == heard_by_bob  # alice's purchase is none of bob's business
    assert set(to_boss) == set(uris)
    assert to_alice == [ACTIVE]


async def test_only_an_admin_may_receive_the_servers_log(app: App, gotsms_sandbox: GotSmsSandbox) -> None:
    """The log names every agent's rentals (a provider path holds a rental's id): an agent asking for it over
    `logging/setLevel` (2025-11-25 era; clients such as the Inspector send it as they connect) is answered but
    hears nothing; an admin hears of another's rental."""
    heard: dict[str, list[str]] = {"looker": [], "boss": []}

    def keep(who: str) -> Callable[[LoggingMessageNotificationParams], Awaitable[None]]:
        async def on_log(params: LoggingMessageNotificationParams) -> None:
            heard[who].append(str(params.data))

        return on_log

    async with (
        served(app) as base,
        authorized(base, "legacy", LOOKER_KEY, logging_callback=keep("looker")) as looker,
        authorized(base, "legacy", BOSS_KEY, logging_callback=keep("boss")) as boss,
    ):
        with pytest.warns(MCPDeprecationWarning):
            await looker.set_logging_level("debug")
        with pytest.warns(MCPDeprecationWarning):
            await boss.set_logging_level("debug")
        async with authorized(base, "legacy", BOB_KEY) as bob:
            his = await rent(bob, service="Telegram", provider="gotsms", country="USA", max_price="1")
            await ok(bob, "get_messages", rental_id=his["rental_id"])
        path = f"/numbers/{local_id(his['rental_id'])}/messages"
        with anyio.fail_after(5):
            while not any(path in line for line in heard["boss"]):
                await anyio.sleep(0.02)
    assert heard["looker"] == []

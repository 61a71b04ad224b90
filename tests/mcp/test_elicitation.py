"""Purchases above SMSRENT_CONFIRM_ABOVE ask the human (MCP elicitation), on both eras.

Legacy (2025-11-25) elicitation is a server-to-client request over the back-channel; on 2026-07-28 it is an
`InputRequiredResult` round that the in-memory `Client` answers with the same `elicitation_callback`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult, ErrorData

from smsrent.mcp.app import App
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import fails, ok, posts

pytestmark = pytest.mark.anyio

THRESHOLD = "0.50"  # below Getatext's whatsapp (0.55), above its uber (0.20)


@pytest.fixture
def app(tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox) -> App:
    return sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, confirm_above=THRESHOLD)


class Human:
    """An elicitation callback that records each question and answers as told."""

    def __init__(self, action: str = "accept", approve: bool = True) -> None:
        self.action = action
        self.approve = approve
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        self.asked.append(params)
        if self.action == "accept":
            return ElicitResult(action="accept", content={"approve": self.approve})
        return ElicitResult(action="decline" if self.action == "decline" else "cancel")


async def test_approved_purchase_is_bought(app: App, mode: str, getatext_sandbox: GetatextSandbox) -> None:
    human = Human()
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        result = await ok(client, "rent_number", plan_id="getatext:whatsapp", max_price="1")
    assert result["rental"]["price"] == "0.55"
    assert result["rental"]["rental_id"].startswith("getatext:")
    [question] = human.asked
    assert isinstance(question, ElicitRequestFormParams)
    assert "0.55 USD" in question.message
    assert f"{THRESHOLD} USD" in question.message
    assert "Whatsapp" in question.message
    assert question.requested_schema["properties"]["approve"]["type"] == "boolean"
    assert question.requested_schema["required"] == ["approve"]
    assert posts(getatext_sandbox) == ["/api/v1/rent-a-number"]
    assert getatext_sandbox.balance == Decimal("19.45")


async def test_approved_purchase_by_service(app: App, mode: str, gotsms_sandbox: GotSmsSandbox) -> None:
    human = Human()
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        result = await ok(client, "rent_number", service="Google", country="UK", max_price="2")
    assert result["rental"]["service"] == "Google"
    assert len(human.asked) == 1
    assert "1.00 USD" in human.asked[0].message
    assert posts(gotsms_sandbox) == ["/api/rents"]


@pytest.mark.parametrize(
    ("action", "approve"),
    [("decline", False), ("cancel", False), ("accept", False)],
    ids=["declined", "cancelled", "accepted-but-not-approved"],
)
async def test_refused_purchase_buys_nothing(
    app: App, mode: str, action: str, approve: bool, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    human = Human(action, approve)
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        error = await fails(client, "rent_number", plan_id="getatext:whatsapp", max_price="1")
        assert "not approved" in error
        assert "nothing was bought" in error
        assert (await ok(client, "list_rentals", status="all"))["count"] == 0
    assert len(human.asked) == 1
    assert posts(getatext_sandbox) == []
    assert posts(gotsms_sandbox) == []
    assert getatext_sandbox.balance == Decimal("20.00")


async def test_client_without_elicitation_is_refused(
    app: App, mode: str, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with Client(app.mcp, mode=mode) as client:
        error = await fails(client, "rent_number", plan_id="getatext:whatsapp", max_price="1")
    assert "SMSRENT_CONFIRM_ABOVE" in error
    assert "nothing was bought" in error
    assert posts(getatext_sandbox) == []
    assert posts(gotsms_sandbox) == []


async def test_below_the_threshold_nobody_is_asked(app: App, mode: str, getatext_sandbox: GetatextSandbox) -> None:
    human = Human(action="decline")  # would refuse, if it were asked
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        result = await ok(client, "rent_number", plan_id="getatext:uber", max_price="1")
    assert result["rental"]["price"] == "0.20"
    assert human.asked == []
    assert posts(getatext_sandbox) == ["/api/v1/rent-a-number"]


async def test_below_the_threshold_clients_without_elicitation_buy(
    app: App, mode: str, getatext_sandbox: GetatextSandbox
) -> None:
    async with Client(app.mcp, mode=mode) as client:
        await ok(client, "rent_number", plan_id="getatext:uber", max_price="1")
    assert posts(getatext_sandbox) == ["/api/v1/rent-a-number"]


async def test_limits_refuse_before_asking_the_human(app: App, mode: str, getatext_sandbox: GetatextSandbox) -> None:
    human = Human()
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        error = await fails(client, "rent_number", plan_id="getatext:whatsapp", max_price="0.52")
    assert "max_price" in error
    assert human.asked == []
    assert posts(getatext_sandbox) == []


async def test_no_threshold_means_no_question(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, mode: str
) -> None:
    human = Human(action="decline")
    unguarded = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with Client(unguarded.mcp, mode=mode, elicitation_callback=human) as client:
        await ok(client, "rent_number", plan_id="getatext:whatsapp", max_price="1")
    assert human.asked == []


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "declined"])
async def test_extensions_above_the_threshold_ask_too(
    app: App, mode: str, approve: bool, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Moving a GotSMS daily rent to a weekly plan is a purchase like a rent: above the threshold, the human decides."""
    plans = gotsms_sandbox.plans.values()
    discord = {p.duration_type: p for p in plans if (p.service, p.country) == ("Discord", "USA")}
    day, week = discord["day"], discord["week"]
    human = Human()
    async with Client(app.mcp, mode=mode, elicitation_callback=human) as client:
        rented = await ok(client, "rent_number", plan_id=f"gotsms:{day.id}", max_price="1")  # 0.60: asked too
        human.asked.clear()
        human.approve = approve
        arguments = {"rental_id": rented["rental"]["rental_id"], "plan_id": f"gotsms:{week.id}", "max_price": "5"}
        if approve:
            changed = await ok(client, "extend_rental", **arguments)
            assert changed["rental"]["plan_id"] == f"gotsms:{week.id}"
        else:
            error = await fails(client, "extend_rental", **arguments)
            assert "nothing was bought" in error
    [question] = human.asked
    assert "extending gotsms:" in question.message
    assert f"{week.price} USD" in question.message
    transitions = [p for p in posts(gotsms_sandbox) if p.endswith("/transition")]
    assert len(transitions) == (1 if approve else 0)

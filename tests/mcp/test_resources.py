"""Resources, `resources/updated` notifications, the `verify_signup` prompt and completion, on both eras."""

from __future__ import annotations

import functools
import json
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from mcp import Client, MCPDeprecationWarning, MCPError
from mcp.types import (
    PromptReference,
    ResourceTemplateReference,
)

from smsrent.mcp.app import App
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.mcp import INJECTION, fails, local_id, ok, outside_fences, rent_getatext, rent_gotsms, wait_while
from tests.mcp.resources import Updates, read_json, subscribed

pytestmark = pytest.mark.anyio

ACTIVE = "smsrent://rentals/active"
RECENT = "smsrent://messages/recent"
TEMPLATE = "smsrent://rentals/{rental_id}"
TEMPLATE_REF = ResourceTemplateReference(type="ref/resource", uri=TEMPLATE)
PROMPT_REF = PromptReference(type="ref/prompt", name="verify_signup")


# -- Listing and reading ------------------------------------------------------------------------------------


async def test_resources_and_templates_are_listed(client: Client) -> None:
    resources = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert set(resources) == {ACTIVE, RECENT}
    assert all(r.mime_type == "application/json" and r.title and r.description for r in resources.values())
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == [TEMPLATE]
    assert templates[0].mime_type == "application/json"


async def test_active_rentals(client: Client) -> None:
    assert await read_json(client, ACTIVE) == {"rentals": [], "count": 0, "currency": "USD", "sandbox": True}
    kept = await rent_gotsms(client)
    ended = await rent_getatext(client)
    await ok(client, "refund", rental_id=ended["rental_id"])
    active = await read_json(client, ACTIVE)
    assert [r["rental_id"] for r in active["rentals"]] == [kept["rental_id"]]
    assert active["count"] == 1
    assert active["rentals"][0]["phone"] == kept["phone"]


async def test_one_rental_with_its_messages(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    uri = f"smsrent://rentals/{rental['rental_id']}"
    before = await read_json(client, uri)
    assert before["rental"]["rental_id"] == rental["rental_id"]
    assert before["messages"] == []

    gotsms_sandbox.deliver(local_id(rental["rental_id"]), f"Your code is 246810. {INJECTION}", "246810")
    detail = await read_json(client, uri)
    assert detail["rental"]["status"] == "active"
    [sms] = detail["messages"]
    assert sms["code"] == "246810"
    assert sms["text"].startswith("<untrusted-sms>")
    assert sms["text"].endswith("</untrusted-sms>")
    assert INJECTION not in outside_fences(json.dumps(detail))


async def test_getatext_rental_resource_keeps_leading_zeros(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = await rent_getatext(client)
    getatext_sandbox.deliver(int(local_id(rental["rental_id"])), "004521")
    detail = await read_json(client, f"smsrent://rentals/{rental['rental_id']}")
    assert [m["code"] for m in detail["messages"]] == ["004521"]


async def test_recent_messages_newest_first(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    assert await read_json(client, RECENT) == {"messages": [], "sandbox": True}
    first = await rent_getatext(client)
    getatext_sandbox.deliver(int(local_id(first["rental_id"])), "001122")
    await ok(client, "get_messages", rental_id=first["rental_id"])
    await anyio.sleep(0.05)
    second = await rent_gotsms(client)
    gotsms_sandbox.deliver(local_id(second["rental_id"]), f"Code 334455. {INJECTION}", "334455")
    await ok(client, "get_messages", rental_id=second["rental_id"])

    recent = await read_json(client, RECENT)
    assert [(m["rental_id"], m["sms"]["code"]) for m in recent["messages"]] == [
        (second["rental_id"], "334455"),
        (first["rental_id"], "001122"),
    ]
    assert INJECTION not in outside_fences(json.dumps(recent))


@pytest.mark.parametrize(
    "uri",
    [
        "smsrent://rentals/getatext:99999",
        "smsrent://rentals/gotsms:00000000-0000-4000-8000-000000000000",
        "smsrent://rentals/gotsms:../../x",
        "smsrent://rentals/getatext:1%2F2",
        "smsrent://rentals/evil:1",
        "smsrent://nothing/here",
    ],
)
async def test_unknown_or_malformed_rental_uri_is_an_mcp_error(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, uri: str
) -> None:
    with pytest.raises(MCPError) as raised:
        await client.read_resource(uri)
    assert raised.value.error.code == -32602
    if "evil" in uri or ".." in uri or "%2F" in uri:
        assert gotsms_sandbox.requests == []
        assert getatext_sandbox.requests == []
    assert (await read_json(client, ACTIVE))["count"] == 0  # the server keeps answering


# -- resources/updated --------------------------------------------------------------------------------------


def updates(app: App, mode: str, uris: list[str]) -> AbstractAsyncContextManager[tuple[Client, Updates]]:
    """An in-memory client of `app` subscribed to `uris`."""
    return subscribed(functools.partial(Client, app.mcp, mode=mode), mode, uris)


async def test_subscribers_hear_when_a_message_arrives(app: App, mode: str, gotsms_sandbox: GotSmsSandbox) -> None:
    async with Client(app.mcp, mode=mode) as setup:
        rental = await rent_gotsms(setup)
        other = await rent_gotsms(setup, service="Google")
    rental_uri = f"smsrent://rentals/{rental['rental_id']}"
    other_uri = f"smsrent://rentals/{other['rental_id']}"
    async with updates(app, mode, [rental_uri, other_uri, RECENT]) as (client, (received, until)):
        rent_id = local_id(rental["rental_id"])
        result = await wait_while(
            client, rental["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, "Code 9182", "9182")
        )
        assert result.structured_content is not None
        assert result.structured_content["code"] == "9182"
        await until({rental_uri, RECENT})
    assert other_uri not in received  # only the rental that got the message


async def test_subscribers_hear_when_rentals_change(app: App, mode: str) -> None:
    async with updates(app, mode, [ACTIVE]) as (client, (received, until)):
        rental = await rent_getatext(client)
        await until({ACTIVE})
        count = len(received)
        await ok(client, "refund", rental_id=rental["rental_id"])
        with anyio.fail_after(8):
            while len(received) == count:
                await anyio.sleep(0.02)
    assert set(received) == {ACTIVE}


async def test_legacy_unsubscribe_stops_notifications(app: App) -> None:
    async with updates(app, "legacy", [ACTIVE]) as (client, (received, until)):
        await rent_getatext(client, "getatext:uber")
        await until({ACTIVE})
        with pytest.warns(MCPDeprecationWarning):
            await client.unsubscribe_resource(ACTIVE)
        received.clear()
        await rent_getatext(client, "getatext:discord")
        await anyio.sleep(0.3)
    assert received == []


# -- Prompt and completion ----------------------------------------------------------------------------------


async def test_verify_signup_prompt(client: Client) -> None:
    [prompt] = (await client.list_prompts()).prompts
    assert prompt.name == "verify_signup"
    assert prompt.title
    assert prompt.description
    arguments = {a.name: a for a in prompt.arguments or []}
    assert set(arguments) == {"service", "country", "max_price"}
    assert arguments["service"].required is True
    assert all(a.description for a in arguments.values())

    rendered = await client.get_prompt("verify_signup", {"service": "Telegram", "country": "UK", "max_price": "1.25"})
    [message] = rendered.messages
    assert message.role == "user"
    text = getattr(message.content, "text", "")
    assert "Telegram" in text
    assert 'country="UK"' in text
    assert "1.25" in text
    for step in ("list_plans", "rent_number", "wait_for_code", "refund", "untrusted"):
        assert step in text

    plain = await client.get_prompt("verify_signup", {"service": "Discord"})
    plain_text = getattr(plain.messages[0].content, "text", "")
    assert "Discord" in plain_text
    assert "country=" not in plain_text


async def test_prompt_without_its_required_argument_is_an_error(client: Client) -> None:
    with pytest.raises(MCPError):
        await client.get_prompt("verify_signup", {})


async def test_completion_suggests_rental_ids(client: Client) -> None:
    gotsms = await rent_gotsms(client)
    getatext = await rent_getatext(client)
    every = (await client.complete(TEMPLATE_REF, {"name": "rental_id", "value": ""})).completion
    assert set(every.values) == {gotsms["rental_id"], getatext["rental_id"]}
    assert every.total == 2
    assert not every.has_more
    only = (await client.complete(TEMPLATE_REF, {"name": "rental_id", "value": "getatext:"})).completion
    assert only.values == [getatext["rental_id"]]


async def test_completion_suggests_service_names(client: Client) -> None:
    te = (await client.complete(PROMPT_REF, {"name": "service", "value": "te"})).completion
    assert te.values == ["Telegram"]
    w = (await client.complete(PROMPT_REF, {"name": "service", "value": "W"})).completion
    assert w.values
    assert all(v.casefold().startswith("w") for v in w.values)
    assert "Whatsapp" in w.values or "WhatsApp" in w.values
    nothing = (await client.complete(PROMPT_REF, {"name": "country", "value": "U"})).completion
    assert nothing.values == []


async def test_completion_survives_a_provider_failure(
    client: Client, getatext_sandbox: GetatextSandbox, gotsms_sandbox: GotSmsSandbox
) -> None:
    getatext_sandbox.inject("GET", "/api/v1/prices-info", "500", times=3)
    gotsms_sandbox.inject("GET", "/api/rents/plans", "500", times=3)
    nobody = (await client.complete(PROMPT_REF, {"name": "service", "value": "te"})).completion
    assert nobody.values == []
    getatext_sandbox.inject("GET", "/api/v1/prices-info", "500", times=3)
    one_down = (await client.complete(PROMPT_REF, {"name": "service", "value": "te"})).completion
    assert one_down.values == ["Telegram"]  # from the provider that answered
    error = await fails(client, "list_plans", provider="gotsms", max_price="-1")
    assert "max_price" in error
    assert (await client.complete(PROMPT_REF, {"name": "service", "value": "te"})).completion.values == ["Telegram"]

"""The audit trail: a scripted flow of several agents over loopback HTTP leaves exactly the rows it should, failed
authentications are recorded by fingerprint only (and at a bounded rate), and `smsrent-mcp audit` prints them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import cast

import anyio
import httpx
import pytest
from mcp import Client

from smsrent.agents import fingerprint, key_digest
from smsrent.mcp.app import App
from smsrent.mcp.audit import FAILED_AUTH_ROWS, Audit
from smsrent.mcp.state import AppState, Runtime
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger import AuditEntry, Ledger, open_ledger
from tests.auth import ALICE_KEY, BOB_KEY, BOSS_KEY, LOOKER_KEY, agents_app, bearer
from tests.e2e.process import command, server_env
from tests.mcp import fails, ok
from tests.mcp.served import INITIALIZE, MCP_HEADERS, authorized, served

pytestmark = pytest.mark.anyio

BAD_KEY = "smsrent_not-a-key-5e5e5e5e5e"
D = Decimal


async def scripted_flow(app: App) -> str:
    """alice rents, is refused by her budget and by her cap; looker (read only) tries to rent; a bad key knocks;
    bob tries auto-renew on alice's rental (unknown to him); boss refunds it and reads the balance (not audited).
    Returns the rental's id."""
    async with served(app) as base:
        async with authorized(base, "legacy", ALICE_KEY) as alice:
            rental = (await ok(alice, "rent_number", plan_id="getatext:telegram", max_price="0.5"))["rental"]
            await fails(alice, "rent_number", plan_id="getatext:whatsapp", max_price="0.7")
            await fails(alice, "rent_number", plan_id="getatext:whatsapp", max_price="1.5")
        async with authorized(base, "legacy", LOOKER_KEY) as looker:
            await fails(looker, "rent_number", plan_id="getatext:whatsapp", max_price="1")
        async with httpx.AsyncClient() as http:
            knocked = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(BAD_KEY)})
            assert knocked.status_code == 401
        async with authorized(base, "legacy", BOB_KEY) as bob:
            await fails(bob, "set_auto_renew", rental_id=rental["rental_id"], enabled=False)
        async with authorized(base, "legacy", BOSS_KEY) as boss:
            await ok(boss, "refund", rental_id=rental["rental_id"])
            await ok(boss, "get_balance")
    rental_id: str = rental["rental_id"]
    return rental_id


async def test_a_scripted_flow_leaves_exactly_its_audit_rows(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = agents_app(tmp_path, gotsms_sandbox, getatext_sandbox, daily_budget=D("2.00"))
    rental_id = await scripted_flow(app)
    ledger = await open_ledger(tmp_path / "ledger.sqlite3")
    try:
        entries = await ledger.audit_entries()
        assert [e.agent for e in await ledger.audit_entries(agent="alice")] == ["alice"] * 3
    finally:
        await ledger.close()
    rows = [(e.agent, e.credential, e.action, e.rental_id, e.amount, e.outcome) for e in entries]
    assert rows == [
        ("alice", None, "rent_number", rental_id, D("0.40"), "ok"),
        ("alice", None, "rent_number", None, D("0.7"), "refused"),
        ("alice", None, "rent_number", None, D("1.5"), "refused"),
        ("looker", None, "rent_number", None, D("1"), "refused"),
        (None, fingerprint(key_digest(BAD_KEY)), "authenticate", None, None, "unauthenticated"),
        ("bob", None, "set_auto_renew", rental_id, None, "failed"),
        ("boss", None, "refund", rental_id, D("0.40"), "ok"),
    ]
    details = [e.detail or "" for e in entries]
    assert details[0] == "max_price 0.50"
    assert details[1].startswith("Refused: this purchase may cost up to 0.70 USD, and 0.40 USD of agent alice's")
    assert details[2].startswith("Refused: max_price 1.50 USD is above agent alice's per-purchase cap of 1.00 USD")
    assert details[3].startswith("Refused: rent_number needs the spend scope")
    assert details[4] == "no such credential"
    assert details[5] == "Only GotSMS monthly rents and Getatext long rentals can auto-renew"  # before any lookup
    assert BAD_KEY not in json.dumps([e.__dict__ for e in entries], default=str)

    # `smsrent-mcp audit` prints the same rows, filtered by agent, in each format.
    def audit(*args: str) -> str:
        done = subprocess.run(
            [command(), "audit", *args],
            env=server_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    printed = list(csv.reader(io.StringIO(audit("--format", "csv"))))
    assert printed[0] == ["at", "agent", "action", "rental_id", "amount", "outcome", "detail"]
    assert [row[1:6] for row in printed[1:]] == [
        ["alice", "rent_number", rental_id, "0.40", "ok"],
        ["alice", "rent_number", "-", "0.70", "refused"],
        ["alice", "rent_number", "-", "1.50", "refused"],
        ["looker", "rent_number", "-", "1.00", "refused"],
        [f"sha256:{fingerprint(key_digest(BAD_KEY))}...", "authenticate", "-", "-", "unauthenticated"],
        ["bob", "set_auto_renew", rental_id, "-", "failed"],
        ["boss", "refund", rental_id, "0.40", "ok"],
    ]
    assert [row[6] for row in printed[1:]] == details
    lines = [json.loads(line) for line in audit("--agent", "boss", "--format", "jsonl").splitlines()]
    assert [(line["agent"], line["action"], line["amount"]) for line in lines] == [("boss", "refund", "0.40")]
    table = audit("--since", "1h", "--agent", "alice").splitlines()
    assert table[0].split() == ["at", "agent", "action", "rental_id", "amount", "outcome", "detail"]
    assert [line.split()[1:6] for line in table[1:]] == [
        ["alice", "rent_number", rental_id, "0.40", "ok"],
        ["alice", "rent_number", "-", "0.70", "refused"],
        ["alice", "rent_number", "-", "1.50", "refused"],
    ]
    assert audit("--agent", "nobody").startswith("Nothing to report: the ledger at")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_failed_authentications_are_written_at_a_bounded_rate_then_counted(tmp_path: Path) -> None:
    ledger: Ledger = await open_ledger(tmp_path / "ledger.sqlite3")
    clock = Clock()
    runtime = Runtime(cast(AppState, type("State", (), {"rentals": type("R", (), {"ledger": ledger})})))
    audit = Audit(runtime, clock)
    try:
        for n in range(FAILED_AUTH_ROWS + 500):  # a flood within one minute
            await audit.failed_auth(f"{n:08x}")
        assert len(await ledger.audit_entries()) == FAILED_AUTH_ROWS
        clock.now += 61
        await audit.failed_auth("ffffffff")
        entries = await ledger.audit_entries()
    finally:
        await ledger.close()
    assert len(entries) == FAILED_AUTH_ROWS + 2
    assert [e.credential for e in entries[:FAILED_AUTH_ROWS]] == [f"{n:08x}" for n in range(FAILED_AUTH_ROWS)]
    assert entries[-2] == AuditEntry(
        entries[-2].at,
        None,
        "authenticate",
        "unauthenticated",
        detail="500 more failed authentications in an earlier minute, not recorded one by one",
    )
    assert entries[-1].credential == "ffffffff"


async def test_what_a_caller_sends_is_audited_bounded_whatever_it_is(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = agents_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    async with Client(app.mcp) as owner:
        for arguments in ({"max_price": True, "service": "x"}, {"max_price": "1e999"}, {"max_price": ["1"]}):
            assert (await owner.call_tool("rent_number", arguments)).is_error
        assert (await owner.call_tool("refund", {"rental_id": "getatext:" + "9" * 5000})).is_error
        entries = await app.runtime.require().rentals.ledger.audit_entries()
    assert [(e.agent, e.action, e.outcome, e.amount) for e in entries] == [
        ("owner", "rent_number", "failed", None)
    ] * 3 + [("owner", "refund", "failed", None)]
    assert entries[-1].rental_id == ("getatext:" + "9" * 5000)[:100]
    assert all(len(e.detail or "") <= 500 for e in entries)


async def test_a_row_says_what_the_call_did_not_what_the_caller_claimed(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """A rental id sent to a tool that takes none is not the rental bought; a renewal switched off with the string
    "false" is off; a NUL in a rental id (PostgreSQL refuses it in text) is stored as U+FFFD."""
    app = agents_app(tmp_path, gotsms_sandbox, getatext_sandbox, getatext_long_rental_prices="1w=10")
    async with Client(app.mcp) as owner:
        claimed = {"plan_id": "getatext:telegram", "max_price": "0.5", "rental_id": "getatext:424242"}
        rental = (await ok(owner, "rent_number", **claimed))["rental"]
        long = (await ok(owner, "rent_number", plan_id="getatext:long:1w", max_price="11"))["rental"]
        switched = await ok(owner, "set_auto_renew", rental_id=long["rental_id"], enabled="false")
        assert switched["rental"].get("auto_renew") is not True
        await fails(owner, "refund", rental_id="getatext:12\x0034")
        entries = await app.runtime.require().rentals.ledger.audit_entries()
    assert [(e.action, e.outcome, e.rental_id, e.detail) for e in entries] == [
        ("rent_number", "ok", rental["rental_id"], "max_price 0.50"),
        ("rent_number", "ok", long["rental_id"], "max_price 11.00"),
        ("set_auto_renew", "ok", long["rental_id"], "auto_renew off"),
        ("refund", "failed", "getatext:12\ufffd34", entries[-1].detail),
    ]
    assert "\x00" not in (entries[-1].detail or "")


async def test_a_purchase_the_client_gives_up_on_is_audited_as_interrupted(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """The client cancels a rent_number whose answer is slow: no answer, but a row (the purchase itself is
    settled as any lost answer is)."""
    app = agents_app(tmp_path, gotsms_sandbox, getatext_sandbox)
    getatext_sandbox.inject("POST", "/api/v1/rent-a-number", "slow")
    async with Client(app.mcp) as owner:
        with anyio.move_on_after(0.5):
            await owner.call_tool("rent_number", {"plan_id": "getatext:telegram", "max_price": "0.5"})
        ledger = app.runtime.require().rentals.ledger
        with anyio.fail_after(10):
            while not (entries := await ledger.audit_entries()):
                await anyio.sleep(0.05)
    assert [(e.agent, e.action, e.outcome, e.amount) for e in entries] == [
        ("owner", "rent_number", "interrupted", D("0.5"))
    ]

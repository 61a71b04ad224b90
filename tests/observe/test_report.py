"""`smsrent-mcp report` (the installed command) over a ledger built by a scripted flow with known prices, refunds,
refusals, outcomes and hand-over moments: exact figures in every format, windows, agents, and nothing to report."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from smsrent.domain.models import Message, Rental, RentalStatus
from smsrent.service.ledger import Ledger
from smsrent.service.ledger.postgres import PostgresLedger
from smsrent.service.ledger.postgres.base import describe
from smsrent.service.ledger.sqlite import SqliteLedger
from tests.e2e.process import command, server_env

pytestmark = pytest.mark.e2e

DAY = 86400.0


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def bought(ledger: Ledger, provider: str, price: str, rental_id: str, status: RentalStatus) -> None:
    purchase = await ledger.reserve(provider=provider, kind="rent", amount=Decimal(price) + 1)
    await ledger.settle(purchase, "bought", price=Decimal(price), rental_id=rental_id)
    await ledger.save_rental(Rental(rental_id=rental_id, provider=provider, status=status))  # type: ignore[arg-type]


async def code(ledger: Ledger, rental_id: str, received: float, handed_over: float) -> None:
    message = Message(message_id=f"{rental_id}@{received}", rental_id=rental_id, code="1234", received_at=at(received))
    await ledger.add_messages([message])
    assert await ledger.claim_next(rental_id, at=handed_over) == message


async def build_ledger(data_dir: Path) -> None:
    """Two days ago: a Getatext rental (0.40) whose code took 4 s. Within the last hour: a GotSMS rental (1.00)
    with two codes (2.5 s, and one stamped 30 s in the future: 0 s); a Getatext rental (0.55) refunded; a second
    GotSMS rental (1.00) with a code after 10 s; a GotSMS purchase that failed; a Getatext purchase whose outcome
    is unknown (capped at 1.00); two refusals (one before any provider was chosen); a GotSMS rental that expired
    without a code (made elsewhere); an active Getatext rental without a code."""
    now = time.time()
    ledger = await SqliteLedger.open(data_dir / "ledger.sqlite3")
    try:
        await bought(ledger, "getatext", "0.40", "getatext:9", RentalStatus.COMPLETED)
        await code(ledger, "getatext:9", now - 2 * DAY - 4.0, now - 2 * DAY)
    finally:
        await ledger.close()
    with closing(sqlite3.connect(data_dir / "ledger.sqlite3")) as db, db:  # made two days ago
        db.execute("UPDATE purchases SET created_at = ?", (now - 2 * DAY,))
        db.execute("UPDATE rentals SET recorded_at = ?", (now - 2 * DAY,))

    ledger = await SqliteLedger.open(data_dir / "ledger.sqlite3")
    try:
        await bought(ledger, "gotsms", "1.00", "gotsms:r1", RentalStatus.ACTIVE)
        await code(ledger, "gotsms:r1", now - 3600.0, now - 3597.5)
        await code(ledger, "gotsms:r1", now + 30.0, now - 60.0)
        await bought(ledger, "getatext", "0.55", "getatext:11", RentalStatus.CANCELLED)
        await ledger.note_refund("getatext:11", Decimal("0.55"))
        await bought(ledger, "gotsms", "1.00", "gotsms:r3", RentalStatus.ACTIVE)
        await code(ledger, "gotsms:r3", now - 1800.0, now - 1790.0)
        failed = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("2"))
        await ledger.settle(failed, "failed", note="GotSMS says the balance is too low")
        unknown = await ledger.reserve(provider="getatext", kind="rent", amount=Decimal("1.00"))
        await ledger.settle(unknown, "uncertain", note="Getatext did not answer in time")
        await ledger.note_refusal(provider=None, amount=Decimal("6"), note="Refused: above SMSRENT_MAX_PRICE")
        await ledger.note_refusal(provider="gotsms", amount=Decimal("0.5"), note="Refused: costs 1.00")
        await ledger.save_rental(Rental(rental_id="gotsms:r4", provider="gotsms", status=RentalStatus.EXPIRED))
        await ledger.save_rental(Rental(rental_id="getatext:12", provider="getatext", status=RentalStatus.ACTIVE))
    finally:
        await ledger.close()


def report(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [command(), "report", *args],
        env=server_env(data_dir, SMSRENT_DAILY_BUDGET="10"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    anyio.run(build_ledger, tmp_path)
    return tmp_path


def test_table(data_dir: Path) -> None:
    header, *lines = report(data_dir).splitlines()
    assert header.startswith("smsrent report: ")
    assert header.endswith(", every agent")
    assert lines == [
        f"ledger: {data_dir / 'ledger.sqlite3'}",
        "",
        "spend (USD)         bought  spent  refunded   net",
        "getatext     owner       1   0.55      0.55  0.00",
        "gotsms       owner       2   2.00      0.00  2.00",
        "total                    3   2.55      0.55  2.00",
        "daily budget (rolling 24 h, as of now): 10.00, committed 3.00, remaining 7.00",
        "",
        "purchases: bought 3, failed 1, not_bought 0, refused 2, reserved 0, uncertain 1",
        "rentals: 5 (code_received 2, refunded 1, expired_without_code 1, active 1); refund rate 20%",
        "code delivery: 3 codes, p50 2.50 s, p95 10.00 s",
    ]


def test_json(data_dir: Path) -> None:
    figures: dict[str, Any] = json.loads(report(data_dir, "--format", "json"))
    since, until = datetime.fromisoformat(figures.pop("since")), datetime.fromisoformat(figures.pop("until"))
    assert until - since == (until - since).__class__(days=1)
    assert figures == {
        "agent": None,
        "ledger": str(data_dir / "ledger.sqlite3"),
        "currency": "USD",
        "spend": [
            {"provider": "getatext", "agent": "owner", "bought": 1, "spent": "0.55", "refunded": "0.55", "net": "0.00"},
            {"provider": "gotsms", "agent": "owner", "bought": 2, "spent": "2.00", "refunded": "0.00", "net": "2.00"},
        ],
        "total": {"bought": 3, "spent": "2.55", "refunded": "0.55", "net": "2.00"},
        "budget": {"daily": "10.00", "committed": "3.00", "remaining": "7.00"},
        "purchases": {"bought": 3, "failed": 1, "not_bought": 0, "refused": 2, "reserved": 0, "uncertain": 1},
        "rentals": {"code_received": 2, "refunded": 1, "expired_without_code": 1, "active": 1},
        "refund_rate": 0.2,
        "delivery": {"codes": 3, "p50_seconds": 2.5, "p95_seconds": 10.0},
    }


def test_csv(data_dir: Path) -> None:
    rows = list(csv.reader(io.StringIO(report(data_dir, "--format", "csv"))))
    assert rows[0] == ["section", "provider", "agent", "figure", "value"]
    figures = {(section, provider, agent, figure): value for section, provider, agent, figure, value in rows[1:]}
    assert figures == {
        ("spend", "getatext", "owner", "bought"): "1",
        ("spend", "getatext", "owner", "spent"): "0.55",
        ("spend", "getatext", "owner", "refunded"): "0.55",
        ("spend", "getatext", "owner", "net"): "0.00",
        ("spend", "gotsms", "owner", "bought"): "2",
        ("spend", "gotsms", "owner", "spent"): "2.00",
        ("spend", "gotsms", "owner", "refunded"): "0.00",
        ("spend", "gotsms", "owner", "net"): "2.00",
        ("spend", "", "", "spent"): "2.55",
        ("spend", "", "", "refunded"): "0.55",
        ("spend", "", "", "net"): "2.00",
        ("budget", "", "", "daily"): "10.00",
        ("budget", "", "", "committed"): "3.00",
        ("budget", "", "", "remaining"): "7.00",
        ("purchases", "", "", "bought"): "3",
        ("purchases", "", "", "failed"): "1",
        ("purchases", "", "", "not_bought"): "0",
        ("purchases", "", "", "refused"): "2",
        ("purchases", "", "", "reserved"): "0",
        ("purchases", "", "", "uncertain"): "1",
        ("rentals", "", "", "code_received"): "2",
        ("rentals", "", "", "refunded"): "1",
        ("rentals", "", "", "expired_without_code"): "1",
        ("rentals", "", "", "active"): "1",
        ("rentals", "", "", "refund_rate"): "0.2",
        ("delivery", "", "", "codes"): "3",
        ("delivery", "", "", "p50_seconds"): "2.5",
        ("delivery", "", "", "p95_seconds"): "10.0",
    }


def test_a_longer_window_takes_in_older_figures(data_dir: Path) -> None:
    figures = json.loads(report(data_dir, "--since", "7d", "--format", "json"))
    assert figures["total"] == {"bought": 4, "spent": "2.95", "refunded": "0.55", "net": "2.40"}
    assert figures["budget"] == {"daily": "10.00", "committed": "3.00", "remaining": "7.00"}  # always the last 24 h
    assert figures["rentals"]["code_received"] == 3
    assert figures["delivery"] == {"codes": 4, "p50_seconds": 2.5, "p95_seconds": 10.0}
    shorter = json.loads(report(data_dir, "--since", "45m", "--format", "json"))
    assert shorter["delivery"] == {"codes": 2, "p50_seconds": 0.0, "p95_seconds": 10.0}


def test_agents(data_dir: Path) -> None:
    everyone = json.loads(report(data_dir, "--format", "json"))
    owner = json.loads(report(data_dir, "--agent", "owner", "--format", "json"))
    assert owner["agent"] == "owner"
    assert {k: v for k, v in owner.items() if k not in ("since", "until", "agent")} == {
        k: v for k, v in everyone.items() if k not in ("since", "until", "agent")
    }
    nobody = report(data_dir, "--agent", "bob")
    assert nobody.startswith(f"Nothing to report: the ledger at {data_dir / 'ledger.sqlite3'} has no purchase")
    assert " agent bob since " in nobody


def test_nothing_to_report_says_why(tmp_path: Path) -> None:
    text = report(tmp_path)
    assert text == (
        f"Nothing to report: there is no ledger at {tmp_path / 'ledger.sqlite3'} yet. Without provider credentials"
        " the server runs on the sandbox, whose ledger lives in memory and is gone when it stops, so its rentals are"
        " never in a report.\n"
    )
    assert not (tmp_path / "ledger.sqlite3").exists()  # a report creates no ledger


def test_a_bad_window_is_refused_in_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [command(), "report", "--since", "yesterday"], env=server_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "argument --since: expected a duration like 90m, 24h or 7d, got 'yesterday'" in done.stderr


async def build_postgres_ledger(url: SecretStr) -> None:
    ledger = await PostgresLedger.open(url)
    try:
        await bought(ledger, "gotsms", "1.00", "gotsms:r1", RentalStatus.ACTIVE)
        await bought(ledger, "getatext", "0.55", "getatext:11", RentalStatus.CANCELLED)
        await ledger.note_refund("getatext:11", Decimal("0.55"))
    finally:
        await ledger.close()


@pytest.mark.postgres
def test_the_report_reads_a_postgresql_ledger_naming_its_database(tmp_path: Path, database_url: SecretStr) -> None:
    anyio.run(build_postgres_ledger, database_url)
    done = subprocess.run(
        [command(), "report", "--format", "json"],
        env=server_env(tmp_path, SMSRENT_DATABASE_URL=database_url.get_secret_value(), SMSRENT_DAILY_BUDGET="10"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["ledger"] == describe(database_url)
    assert figures["ledger"].startswith("database smsrent_t_")
    assert figures["total"] == {"bought": 2, "spent": "1.55", "refunded": "0.55", "net": "1.00"}
    assert figures["budget"] == {"daily": "10.00", "committed": "1.00", "remaining": "9.00"}
    assert not (tmp_path / "ledger.sqlite3").exists()

"""The quick soak (`scripts/soak.py --quick`): faults, hostile bodies, kills and random sessions on real server
processes, two of them sharing one data dir, then the invariants. The script checks them; this test makes sure it
ran, exercised what it claims (every hostile body, purchases and takeovers through both servers of the shared
data dir), and passed."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from smsrent.sandbox.base import HOSTILE

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).parents[2] / "scripts" / "soak.py"


def figure(table: str, label: str) -> str:
    found = re.search(rf"^  {re.escape(label)}\s+(.*)$", table, re.MULTILINE)
    assert found, f"no {label!r} row in:\n{table}"
    return found.group(1)


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def money(text: str) -> list[Decimal]:
    return [Decimal(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]


def first_number(text: str) -> int:
    return int(re.match(r"\d+", text).group())  # type: ignore[union-attr]


def test_quick_soak_holds_its_invariants() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600, check=False
    )
    table = run.stdout
    assert run.returncode == 0, f"{table}\n{run.stderr[-3000:]}"
    assert "invariants: all hold" in table
    assert first_number(figure(table, "sequences run")) >= 50  # 100 unless the machine is very slow
    assert first_number(figure(table, "faults injected")) >= 20
    met = dict(re.findall(r"([a-z_]+) (\d+)", figure(table, "hostile bodies")))
    assert all(int(met.get(kind, 0)) >= 1 for kind in HOSTILE), met
    slowest = re.findall(r"(\w+) ([\d.]+) s \(bound ([\d.]+)\)", figure(table, "slowest tool calls"))
    assert {"rent_number", "wait_for_code", "refund"} <= {tool for tool, _, _ in slowest}
    assert all(Decimal(took) <= Decimal(bound) for _, took, bound in slowest)
    bought, takeovers, port = figure(table, "shared data dir").split("; ")
    assert [int(n) > 0 for n in re.findall(r"(\d+) by ", bought)] == [True, True], bought  # both servers bought
    assert first_number(takeovers) >= 1  # what a killed server left mid-purchase was taken over
    held, taken = numbers(port)
    assert held >= 1  # one server listened for pushes ...
    assert taken >= 1  # ... while the other found the port taken and served without it
    assert first_number(figure(table, "crashes survived (SIGKILL)")) >= 1
    assert first_number(figure(table, "bad inputs tried")) >= 1
    assert figure(table, "secrets found") == "0"
    assert figure(table, "unexpected client failures") == "0"
    _, made, recorded, unverified = numbers(figure(table, "purchases attempted / made / recorded"))
    at_providers, in_ledgers, idless = numbers(figure(table, "rentals at providers vs ledgers"))
    assert made == at_providers > 0
    assert recorded - unverified == in_ledgers  # one verified purchase per recorded rental
    assert made == in_ledgers + idless  # the rest: rentals whose id never arrived ...
    assert idless <= unverified  # ... each one an unverified purchase's
    charged, verified, for_unverified, counted = money(figure(table, "money charged vs recorded"))
    assert charged == verified + for_unverified
    assert counted >= for_unverified

"""The ledger's database goes away around a purchase (PostgreSQL restarting, say): a purchase the provider made is
never reported as not bought, and is recorded once the database answers; a failed hand-over after a purchase does
not turn its result into an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from smsrent.domain.errors import LedgerUnavailable, PurchaseUnsettled
from smsrent.sandbox.base import SandboxTiming
from tests.world import open_world

pytestmark = pytest.mark.anyio


async def test_a_purchase_made_while_the_database_was_down_counts_and_is_recorded_once_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(tmp_path / "ledger.sqlite3", SandboxTiming.instant()) as world:
        ledger = world.ledger
        settle, release = ledger.settle, ledger.release

        async def down_after_the_call(purchase_id: int, state: Any, **fields: Any) -> None:
            if state == "bought":  # the outage began while the provider answered
                raise LedgerUnavailable("connection refused")
            await settle(purchase_id, state, **fields)

        async def down(purchase_id: int) -> None:
            raise LedgerUnavailable("connection refused")

        monkeypatch.setattr(ledger, "settle", down_after_the_call)
        monkeypatch.setattr(ledger, "release", down)
        with pytest.raises(PurchaseUnsettled, match="do not buy again") as refused:
            await world.rent("gotsms")
        assert "nothing was bought" not in refused.value.message
        (purchase,) = await ledger.purchases()
        assert purchase.state == "reserved"  # counted at its max price meanwhile, by this process
        assert await ledger.committed() == purchase.max_price

        monkeypatch.setattr(ledger, "settle", settle)  # the database is back
        monkeypatch.setattr(ledger, "release", release)
        with anyio.move_on_after(1):
            await world.rentals.purchases.heartbeat(every=0.05)
        (rent_id,) = world.gotsms_sandbox.rents
        (purchase,) = await ledger.purchases()
        rentals = await ledger.rentals()
        charged = await ledger.committed()
    assert (purchase.state, purchase.rental_id) == ("bought", f"gotsms:{rent_id}")
    assert [r.rental_id for r in rentals] == [f"gotsms:{rent_id}"]
    assert charged == purchase.price


async def test_a_hand_over_the_database_refuses_after_a_purchase_leaves_its_result_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(tmp_path / "ledger.sqlite3", SandboxTiming.instant()) as world:

        async def down(purchase_id: int) -> None:
            raise LedgerUnavailable("connection refused")

        monkeypatch.setattr(world.ledger, "release", down)
        rental_id = await world.rent("gotsms")
        (purchase,) = await world.ledger.purchases()
    assert (purchase.state, purchase.rental_id) == ("bought", rental_id)


async def test_a_refund_the_provider_made_is_credited_even_if_the_call_is_cancelled_right_after(
    tmp_path: Path,
) -> None:
    """The refund is answered, then the call is cancelled while it reads the balance (a client that gave up):
    the credit and the rental given back are in the ledger all the same."""
    async with open_world(tmp_path / "ledger.sqlite3", SandboxTiming.instant()) as world:
        rental_id = await world.rent("gotsms")
        world.gotsms_sandbox.inject("GET", "/api/account", "slow")
        with anyio.move_on_after(0.5) as scope:
            await world.rentals.refund(rental_id)
        (charge,) = await world.ledger.charges()
        rental = await world.ledger.rental(rental_id)
    assert scope.cancelled_caught  # the call was cut short while reading the balance
    assert charge.charged > 0
    assert charge.refunded == charge.charged
    assert rental is not None
    assert rental.status == "refunded"

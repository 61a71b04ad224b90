"""Fixtures for the service-layer tests: a ledger file per test and the real adapters over both sandboxes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from smsrent.providers.base import Provider
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.getatext import TZ, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.rentals import Rentals
from tests.helpers import FAST_RETRY, getatext_adapter, gotsms_adapter


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.sqlite3"


@pytest.fixture
async def ledger(ledger_path: Path) -> AsyncIterator[Ledger]:
    opened = await SqliteLedger.open(ledger_path)
    yield opened
    await opened.close()


@pytest.fixture
async def gotsms(gotsms_sandbox: GotSmsSandbox) -> AsyncIterator[GotSmsProvider]:
    adapter = gotsms_adapter(gotsms_sandbox)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def getatext(getatext_sandbox: GetatextSandbox) -> AsyncIterator[GetatextProvider]:
    adapter = getatext_adapter(getatext_sandbox)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def unpriced_getatext(getatext_sandbox: GetatextSandbox) -> AsyncIterator[GetatextProvider]:
    """Getatext as configured without GETATEXT_LONG_RENTAL_PRICES: long plans have no published price."""
    adapter = GetatextProvider(
        SecretStr(getatext_sandbox.api_key),
        base_url="http://getatext.sandbox",
        transport=httpx.ASGITransport(app=getatext_sandbox.app),
        tz=TZ,
        retry=FAST_RETRY,
        sandbox=True,
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
def rentals(ledger: Ledger, gotsms: GotSmsProvider, getatext: GetatextProvider) -> Rentals:
    """Both sandbox providers, no money limits."""
    return Rentals([gotsms, getatext], ledger, MoneyGuard())


@pytest.fixture
def make_rentals(ledger: Ledger) -> Callable[..., Rentals]:
    """Rentals over the test's ledger with the given providers and guard."""

    def build(*providers: Provider, guard: MoneyGuard | None = None) -> Rentals:
        return Rentals(list(providers), ledger, guard or MoneyGuard())

    return build

"""Fixtures for the service-layer tests: a ledger file per test, the real adapters over both sandboxes,
and transports that lose a provider's answer after the request reached it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.providers.base import Provider
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.base import SandboxServer
from smsrent.sandbox.getatext import TZ, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.rentals import Rentals

from ..helpers import FAST_RETRY, getatext_adapter, gotsms_adapter

Loss = Literal["timeout", "disconnect", "hang"]


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.sqlite3"


@pytest.fixture
async def ledger(ledger_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(ledger_path)
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


class LoseAnswer(httpx.AsyncBaseTransport):
    """Forwards every request to `inner`; the next `times` requests to `method path` reach the provider
    (unless `deliver=False`) and then lose their answer: a read timeout, a dropped connection, or a hang.
    `then` is called each time an answer is lost (to start an outage, say); with `hold`, the loss is reported
    only once `hold` is set (the answer is slow, then lost)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        method: str,
        path: str,
        loss: Loss,
        *,
        times: int = 1,
        deliver: bool = True,
        then: Callable[[], object] | None = None,
        hold: anyio.Event | None = None,
    ) -> None:
        self.inner = inner
        self.method, self.path, self.loss = method, path, loss
        self.times, self.deliver, self.then, self.hold = times, deliver, then, hold
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.times <= 0 or request.method != self.method or request.url.path != self.path:
            return await self.inner.handle_async_request(request)
        self.times -= 1
        if self.deliver:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            await response.aclose()
        self.lost += 1
        if self.then is not None:
            self.then()
        if self.hold is not None:
            await self.hold.wait()
        if self.loss == "hang":
            await anyio.sleep_forever()
        if self.loss == "timeout":
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def requests_to(sandbox: SandboxServer, method: str, path: str) -> int:
    """How many `method path` requests the sandbox served."""
    return sum(1 for _, m, p in sandbox.requests if m == method and p == path)


def request_log(sandbox: SandboxServer, since: int = 0) -> list[str]:
    """`METHOD path` of every request the sandbox served from index `since` on."""
    return [f"{m} {p}" for _, m, p in sandbox.requests[since:]]


class Outage(httpx.AsyncBaseTransport):
    """Forwards every request to `inner`, except that while `down`, requests to `method path` get a 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str, path: str, *, down: bool = False) -> None:
        self.inner, self.method, self.path, self.down = inner, method, path, down
        self.refused = 0

    def start(self) -> None:
        self.down = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.method == self.method and request.url.path == self.path:
            self.refused += 1
            return httpx.Response(503, json={"message": "Service Unavailable"}, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class OnAnswer(httpx.AsyncBaseTransport):
    """Forwards every request to `inner` and calls `hook` once the answer to `method path` has arrived."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str, path: str, hook: Callable[[], object]) -> None:
        self.inner, self.method, self.path, self.hook = inner, method, path, hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == self.method and request.url.path == self.path:
            await response.aread()
            self.hook()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

"""Every request an adapter sends is reported once, with its route template and status class (transport
failures and cancellations included), and every path an adapter uses has a template."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import ProviderError
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.observed import OTHER, ProviderRequest
from tests.helpers import FAST_RETRY
from tests.providers.transport import Router, json_response

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("provider", [GotSmsProvider, GetatextProvider])
def test_every_path_an_adapter_sends_has_a_route_template(provider: type[GotSmsProvider | GetatextProvider]) -> None:
    """Every path literal in the adapter's module (ids filled in) maps to one of its templates, so no request is
    counted as `other` and no id becomes a label."""
    source = (ROOT / "server" / "smsrent" / "providers" / f"{provider.name}.py").read_text()
    paths = set(re.findall(r'f?"(/[a-z0-9_/{}\-]+)"', source))
    assert len(paths) >= 10
    filled = {path: re.sub(r"\{[^}]+\}", "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f", path) for path in paths}
    assert {path: provider.routes.template(concrete) for path, concrete in filled.items()} == {
        path: re.sub(r"\{[^}]+\}", "{id}", path) for path in paths
    }
    assert provider.routes.template("/rents/123/unknown") == OTHER


@pytest.mark.parametrize(
    ("step", "status"),
    [
        (lambda _: json_response(200, {"success": True, "data": {"balance": 1}}), "2xx"),
        (lambda _: json_response(404, {"message": "No query results"}), "4xx"),
        (lambda _: json_response(503, {"message": "down"}), "5xx"),  # retried: three requests, three reports
        (httpx.ConnectError, "error"),
        (httpx.ReadTimeout, "timeout"),
    ],
)
@pytest.mark.anyio
async def test_each_request_is_reported_once_with_its_status_class(step: object, status: str) -> None:
    router = Router().add("GET", "/proxy/api/numbers/abc-123/status", step)  # type: ignore[arg-type]
    seen: list[ProviderRequest] = []
    adapter = GotSmsProvider(
        SecretStr("t0ken"), base_url="http://127.0.0.1:9/proxy/api/", transport=router.transport, retry=FAST_RETRY
    )
    adapter.request_observers.append(seen.append)
    try:
        await adapter.number_status("abc-123")
    except ProviderError:
        pass
    finally:
        await adapter.aclose()
    attempts = len(router.requests)
    assert [(s.provider, s.endpoint, s.status) for s in seen] == [
        ("gotsms", "GET /numbers/{id}/status", status)
    ] * attempts
    assert all(s.seconds >= 0 for s in seen)


@pytest.mark.anyio
async def test_a_cancelled_request_is_reported_cancelled() -> None:
    started = anyio.Event()

    async def hang(_request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    seen: list[ProviderRequest] = []
    adapter = GotSmsProvider(SecretStr("t0ken"), transport=httpx.MockTransport(hang), retry=FAST_RETRY)
    adapter.request_observers.append(seen.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(adapter.account)
        await started.wait()
        tg.cancel_scope.cancel()
    await adapter.aclose()
    assert [(s.endpoint, s.status) for s in seen] == [("GET /account", "cancelled")]

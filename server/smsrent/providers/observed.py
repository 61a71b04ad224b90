"""Every HTTP request an adapter sends, observed: a span, and one `ProviderRequest` for the observers
(the metrics) when it finishes.

It sits between the adapter's `httpx.AsyncClient` and the real transport, so each attempt of a retried
call counts, and a request counts as finished when its body has been read (or failed). Endpoints are
route templates of the provider's API (`POST /rents/{id}/refund`): no id, phone, code or key ever becomes
a label or a span attribute, and a path outside the templates is `other`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from smsrent.observe.tracing import tracer

OTHER = "other"


@dataclass(frozen=True)
class ProviderRequest:
    """One finished request: `status` is `2xx`..`5xx`, `timeout`, `error` (no answer) or `cancelled`."""

    provider: str
    endpoint: str
    status: str
    seconds: float


RequestObserver = Callable[[ProviderRequest], None]


class Routes:
    """A provider API's route templates (`/rents/{id}/refund`), matched against request paths."""

    def __init__(self, templates: Sequence[str]) -> None:
        self._patterns = [
            (template, re.compile(re.escape(template).replace(re.escape("{id}"), "[^/]+"))) for template in templates
        ]

    def template(self, path: str) -> str:
        return next((template for template, pattern in self._patterns if pattern.fullmatch(path)), OTHER)


class ObservedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        provider: str,
        routes: Routes,
        base_url: str,
        observers: list[RequestObserver],
    ) -> None:
        self._inner = inner
        self.name = provider
        self._routes = routes
        self._base_path = httpx.URL(base_url).path.rstrip("/")
        self._observers = observers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self._base_path and path.startswith(self._base_path):
            path = path[len(self._base_path) :]
        template = self._routes.template(path)
        endpoint = f"{request.method} {template}"
        span = tracer.start_span(
            endpoint,
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": request.method, "url.template": template, "smsrent.provider": self.name},
        )
        started = time.perf_counter()

        def finish(status: str, code: int | None = None) -> None:
            if code is not None:
                span.set_attribute("http.response.status_code", code)
            if code is None or code >= 400:
                span.set_attribute("error.type", status if code is None else str(code))
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            done = ProviderRequest(self.name, endpoint, status, time.perf_counter() - started)
            for observer in self._observers:
                observer(done)

        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as err:
            finish(_failure(err))
            raise
        if isinstance(response.stream, httpx.ByteStream):  # the body is in memory already (a mock transport)
            finish(f"{response.status_code // 100}xx", response.status_code)
        else:
            assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport answers with async bodies
            response.stream = _Finishing(response.stream, response.status_code, finish)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Finishing(httpx.AsyncByteStream):
    """A response body that reports the request finished once it is closed (after it was read, or failed)."""

    def __init__(self, stream: httpx.AsyncByteStream, code: int, finish: Callable[[str, int | None], None]) -> None:
        self._stream = stream
        self._code = code
        self._finish: Callable[[str, int | None], None] | None = finish
        self._failure: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except BaseException as err:
            self._failure = _failure(err)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._finish is not None:
                finish, self._finish = self._finish, None
                if self._failure is None:
                    finish(f"{self._code // 100}xx", self._code)
                else:
                    finish(self._failure, None)


def _failure(err: BaseException) -> str:
    if isinstance(err, anyio.get_cancelled_exc_class()):
        return "cancelled"
    return "timeout" if isinstance(err, httpx.TimeoutException) else "error"

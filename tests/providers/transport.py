"""A recording router for `httpx.MockTransport`: scripted answers per route, every request kept for assertions."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx

Handler = Callable[[httpx.Request], httpx.Response]
# One scripted step: an answer, an httpx exception (class or instance) to raise, or a function of the request.
Step = httpx.Response | Exception | type[Exception] | Handler


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def raw_response(status: int, text: str, content_type: str = "application/json", **headers: str) -> httpx.Response:
    """A body sent byte for byte (a fixture as printed, an HTML page, truncated JSON, a handler token)."""
    return httpx.Response(status, content=text.encode(), headers={"content-type": content_type, **headers})


class Router:
    """Serves scripted steps per `(method, path)`, in order; the last step of a route repeats.

    A request to a route that has no script fails the test (the adapter called something unexpected),
    and so does the request after `limit` (an adapter looping on a misbehaving server; MockTransport
    never yields to the event loop, so a timeout could not stop it).
    """

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self.requests: list[httpx.Request] = []
        self._routes: dict[tuple[str, str], deque[Step]] = {}

    def add(self, method: str, path: str, *steps: Step) -> Router:
        self._routes.setdefault((method.upper(), path), deque()).extend(steps)
        return self

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) > self.limit:
            raise AssertionError(f"more than {self.limit} requests: the adapter does not stop")
        steps = self._routes.get((request.method, request.url.path))
        if not steps:
            raise AssertionError(f"unexpected request {request.method} {request.url.path}")
        step = steps.popleft() if len(steps) > 1 else steps[0]
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, Exception):
            raise step
        if isinstance(step, type) and issubclass(step, Exception):
            if issubclass(step, httpx.RequestError):
                raise step("scripted failure", request=request)
            raise step()
        handler = cast(Handler, step)
        return handler(request)

    def paths(self) -> list[str]:
        return [f"{request.method} {request.url.path}" for request in self.requests]

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def body_of(request: httpx.Request) -> Any:
    """The request's JSON body, or None when it sent none."""
    return json.loads(request.content) if request.content else None


def assert_request(
    request: httpx.Request,
    method: str,
    path: str,
    *,
    auth: tuple[str, str],
    secret: str,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    secret_in_query: bool = False,
) -> None:
    """Method, path, exact query, exact JSON body (None: no body), the auth and Accept headers, no secret in the URL."""
    assert request.method == method
    assert request.url.path == path
    assert dict(request.url.params) == dict(query or {})
    assert body_of(request) == body
    header, value = auth
    assert request.headers[header] == value
    assert request.headers["accept"] == "application/json"
    if body is not None:
        assert request.headers["content-type"] == "application/json"
    if secret_in_query:
        assert request.url.params["api_key"] == secret
    else:
        assert secret not in str(request.url)

"""Spans for provider calls and ledger writes under the SDK's MCP request spans, JSON log lines with the trace id,
and nothing secret in either; OTLP export with the `otel` extra, one warning without it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters, stdio_client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsrent.cli import configure_logging
from smsrent.observe.tracing import export_traces
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.e2e.process import server_env
from tests.helpers import sandbox_app
from tests.observe import CAPS, scripted_flow

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider exporting to memory (the API allows one per process: this module's)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    yield spans
    provider.shutdown()  # later spans go nowhere


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The CLI's logging with SMSRENT_LOG_FORMAT=json at DEBUG, its stderr captured; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], {n: logging.getLogger(n).level for n in ("", "smsrent", "httpx", "httpcore", "mcp")})
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        configure_logging("DEBUG", "json")
    logging.getLogger("smsrent").setLevel(logging.DEBUG)  # as the server's lifespan leaves it at DEBUG
    yield stderr
    root.handlers[:] = saved[0]
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


def everything(span: ReadableSpan) -> str:
    """All a span carries beside its ids: name, attributes, events and status."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps(
        [span.name, dict(span.attributes or {}), events, span.status.description], default=str, ensure_ascii=False
    )


def forbidden(flow_phones: list[str], codes: list[str], texts: list[str], secrets: list[str]) -> list[str]:
    """Strings no span or log line may carry: codes, SMS text (and a piece of it), phone numbers in every
    form, credentials."""
    phones = [form for phone in flow_phones for form in (phone, phone.lstrip("+"), phone[2:])]
    return [*codes, *texts, *(t[:24] for t in texts), *phones, *secrets]


async def test_spans_and_json_logs_follow_the_flow_and_carry_no_secret(
    tmp_path: Path,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    exporter: InMemorySpanExporter,
    json_logs: io.StringIO,
) -> None:
    exporter.clear()
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, **CAPS)
    async with Client(app.mcp) as client:
        flow = await scripted_flow(client, gotsms_sandbox, getatext_sandbox)
    spans = exporter.get_finished_spans()
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]

    # Provider calls: method and route template, status; under the MCP request that made them.
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (rent_call, *_) = by_name["tools/call rent_number"]
    assert rent_call.context is not None
    (bought, *_) = by_name["POST /rents"]
    assert bought.context is not None
    assert bought.context.trace_id == rent_call.context.trace_id
    assert dict(bought.attributes or {}) == {
        "http.request.method": "POST",
        "url.template": "/rents",
        "smsrent.provider": "gotsms",
        "http.response.status_code": 201,
    }
    failed = [s for s in by_name["GET /account"] if (s.attributes or {}).get("http.response.status_code") == 500]
    assert len(failed) == 1
    assert failed[0].status.status_code is trace.StatusCode.ERROR
    assert "POST /rents/{id}/refund" in by_name or "POST /api/v1/cancel-rental" in by_name
    assert not [name for name in by_name if name.endswith(" other")]

    # Ledger writes: one span per transaction, named after the ledger method.
    ledger = {name.removeprefix("ledger ") for name in by_name if name.startswith("ledger ")}
    assert {"reserve", "settle", "save_rental", "add_messages", "claim_next", "note_refund", "note_refusal"} <= ledger
    claims = {json.dumps(dict(s.attributes or {}), sort_keys=True) for s in by_name["ledger claim_next"]}
    assert claims == {json.dumps({"db.operation.name": "claim_next", "db.system.name": "sqlite"})}

    # JSON log lines: one object each; inside a span they carry its trace id.
    retried = [line for line in lines if "GET /account failed" in line["message"]]
    assert len(retried) == 1
    traces = {f"{s.context.trace_id:032x}" for s in by_name["tools/call get_balance"] if s.context is not None}
    assert retried[0]["trace_id"] in traces
    assert {"time", "level", "logger", "message", "span_id"} <= set(retried[0])

    # Nothing secret anywhere: codes, SMS text, phone numbers, credentials.
    secrets = [gotsms_sandbox.token, getatext_sandbox.api_key]
    never = forbidden(flow.phones, flow.codes, flow.texts, secrets)
    carried = [everything(span) for span in spans] + [json.dumps(line, ensure_ascii=False) for line in lines]
    assert len(spans) > 30
    assert len(lines) > 10
    assert [(word, text) for text in carried for word in never if word in text] == []


def test_export_traces_warns_once_and_exports_nothing_without_the_sdk(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if smsrent[otel] were not installed
    set_provider: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", set_provider.append)
    with caplog.at_level(logging.WARNING, logger="smsrent"):
        assert export_traces("http://127.0.0.1:4318") is False
        assert export_traces(None) is False
    assert [r.getMessage() for r in caplog.records] == [
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed, so no traces are exported;"
        " install smsrent[otel] to export them."
    ]
    assert set_provider == []


async def test_stdio_server_exports_its_spans_over_otlp_and_starts_without_the_sdk(tmp_path: Path) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT pointing at a loopback collector the server's spans arrive there (sent at
    exit at the latest); with the SDK missing the same server starts, works, and says so once."""
    received: list[tuple[str, str, int]] = []

    async def collect(request: Request) -> Response:
        received.append((request.url.path, request.headers.get("content-type", ""), len(await request.body())))
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    blocked = "import sys; sys.modules['opentelemetry.sdk'] = None; from smsrent.cli import main; main()"
    async with serve_loopback(collector) as endpoint:
        for name, code in (("with", "from smsrent.cli import main; main()"), ("without", blocked)):
            log = tmp_path / f"{name}.log"
            env = server_env(tmp_path / name, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, SMSRENT_LOG_LEVEL="WARNING")
            params = StdioServerParameters(command=sys.executable, args=["-c", code], env=env)
            with log.open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog)) as client:
                    balance = await client.call_tool("get_balance", {})
                    assert not balance.is_error
    assert received, "no spans reached the collector"
    assert {(path, kind) for path, kind, _ in received} == {("/v1/traces", "application/x-protobuf")}
    assert all(size > 0 for _, _, size in received)
    warning = "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed"
    assert warning not in (tmp_path / "with.log").read_text()
    assert (tmp_path / "without.log").read_text().count(warning) == 1

"""Spans for provider calls and ledger writes, their export over OTLP, and JSON log lines with the trace id.

The SDK already opens a span per MCP request; spans here are its children. Span names and attributes carry
route templates, operation names and status codes only: never an id, a phone number, a code, SMS text or a
credential. Without an SDK (the `smsrent[otel]` extra) every span is a no-op.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry import trace

from smsrent import __version__

log = logging.getLogger("smsrent")
tracer = trace.get_tracer("smsrent", __version__)

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


Write = Callable[[S, F], Awaitable[T]]


def traced_write(system: str) -> Callable[[Write[S, F, T]], Write[S, F, T]]:
    """Decorates a ledger's one write path: a span per transaction on the database `system` (`sqlite`,
    `postgresql`), named after the ledger method that wrote (the qualified name of the function it runs, e.g.
    `SqliteLedger.settle.<locals>.<lambda>` gives `settle`)."""

    def decorate(method: Write[S, F, T]) -> Write[S, F, T]:
        @functools.wraps(method)
        async def wrapper(self: S, fn: F) -> T:
            operation = fn.__qualname__.split(".<locals>", 1)[0].rpartition(".")[2]
            attributes = {"db.system.name": system, "db.operation.name": operation}
            with tracer.start_as_current_span(f"ledger {operation}", attributes=attributes, record_exception=False):
                return await method(self, fn)

        return wrapper

    return decorate


def export_traces(endpoint: str | None) -> bool:
    """Send spans to the OTLP/HTTP collector at `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT, the base URL; traces go
    to `<endpoint>/v1/traces`). Without the `smsrent[otel]` extra this logs one warning and exports nothing.
    Returns whether spans are exported."""
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed, so no traces are"
            " exported; install smsrent[otel] to export them."
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": "smsrent", "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the trace and span ids inside a span."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = trace.format_trace_id(context.trace_id)
            entry["span_id"] = trace.format_span_id(context.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

"""`logging/setLevel` (the 2025-11-25 era's logging): forward the server's own log records to the clients
that asked for them, as `notifications/message`, at or above the level each chose. Only the owner and admins
receive them (the log names every agent's rentals); an agent's request is accepted and forwards nothing.

The 2026-07-28 era has no connection-wide logging; those clients read stderr like everyone else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server import MCPServer, ServerRequestContext
from mcp.server.connection import Connection
from mcp.types import EmptyResult, SetLevelRequestParams

from smsrent.mcp import compat
from smsrent.mcp.auth import principal

LOGGER = "smsrent"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": 25,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL + 10,
    "emergency": logging.CRITICAL + 20,
}
_NAMES = sorted(((number, name) for name, number in LEVELS.items()), reverse=True)


def mcp_level(levelno: int) -> str:
    """The MCP level name for a stdlib level number."""
    return next((name for number, name in _NAMES if levelno >= number), "debug")


class ClientLogs(logging.Handler):
    """A handler on the `smsrent` logger that queues records for the subscribed connections."""

    def __init__(self, stderr_level: int) -> None:
        super().__init__()
        self._stderr_level = stderr_level
        self._wanted: dict[int, tuple[Connection, int]] = {}
        self._send: MemoryObjectSendStream[tuple[int, str, str]] | None = None
        self._loop_thread: threading.Thread | None = None

    def install(self, server: MCPServer[Any]) -> None:
        """Serve `logging/setLevel` (this also advertises the `logging` capability)."""
        compat.add_request_handler(server, "logging/setLevel", SetLevelRequestParams, self._set_level)

    async def _set_level(self, ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        if not principal(ctx).is_admin:  # accepted (clients send it as they connect), but nothing is forwarded
            return EmptyResult()
        connection = compat.connection(ctx)
        if id(connection) not in self._wanted:
            connection.exit_stack.callback(self._forget, id(connection))
        self._wanted[id(connection)] = (connection, LEVELS[params.level])
        self._adjust()
        return EmptyResult()

    def _forget(self, key: int) -> None:
        self._wanted.pop(key, None)
        self._adjust()

    def _adjust(self) -> None:
        """Let the `smsrent` logger produce what the most talkative client or stderr wants."""
        wanted = [level for _, level in self._wanted.values()]
        logging.getLogger(LOGGER).setLevel(min([self._stderr_level, *wanted]))

    def emit(self, record: logging.LogRecord) -> None:
        if self._send is None or threading.current_thread() is not self._loop_thread:
            return  # only the event loop's records, while running: the queue is not thread-safe
        if any(record.levelno >= level for _, level in self._wanted.values()):
            with contextlib.suppress(anyio.WouldBlock):  # a slow client loses log lines, never the server's time
                # The message alone: a traceback (a background task's failure) stays on stderr.
                self._send.send_nowait((record.levelno, record.name, record.getMessage()))

    async def run(self) -> None:
        """Deliver queued records until cancelled; attached to the `smsrent` logger meanwhile."""
        self._send, receive = anyio.create_memory_object_stream[tuple[int, str, str]](max_buffer_size=256)
        self._loop_thread = threading.current_thread()
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self)
        try:
            with self._send, receive:
                async for levelno, name, text in receive:
                    for connection, level in list(self._wanted.values()):
                        if levelno >= level:
                            params = {"level": mcp_level(levelno), "logger": name, "data": text}
                            await connection.notify("notifications/message", params)
        finally:
            logger.removeHandler(self)
            self._send = None

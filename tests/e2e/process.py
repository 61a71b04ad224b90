"""Helpers for tests that drive the installed `smsrent-mcp` command in a real subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path


def command() -> str:
    """The installed console script next to this interpreter."""
    found = shutil.which("smsrent-mcp", path=str(Path(sys.executable).parent))
    assert found, "smsrent-mcp is not installed in this environment"
    return found


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no provider credentials from the caller's shell, the ledger in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTSMS_", "GETATEXT_", "SMSRENT_"))}
    return {**env, "SMSRENT_DATA_DIR": str(data_dir), "SMSRENT_LOG_LEVEL": "WARNING", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

"""Fixtures for the delivery tests: a bound on each test, and worlds (see `tests.world`) on a new ledger file each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from smsrent.sandbox.base import SandboxTiming
from tests.world import World, WorldFactory, open_world


@pytest.fixture(autouse=True)
async def bounded() -> AsyncIterator[None]:
    """Every delivery test, with its fixtures, ends within 30 s (the runner task holds the scope)."""
    with anyio.fail_after(30):
        yield


@pytest.fixture
def make_world(tmp_path: Path, timing: SandboxTiming) -> WorldFactory:
    """Build a world (`open_world` options); by default with the test's timing and a new ledger file in tmp_path."""
    built = 0

    def build(*, ledger_path: Path | None = None, **options: Any) -> AbstractAsyncContextManager[World]:
        nonlocal built
        built += 1
        return open_world(ledger_path or tmp_path / f"ledger-{built}.sqlite3", timing, **options)

    return build

"""Shared fixtures: the anyio backend and sandbox providers with test timings."""

from __future__ import annotations

import pytest

from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def timing() -> SandboxTiming:
    """Almost instant queues and windows; codes arrive only when a test sends them."""
    return SandboxTiming.instant()


@pytest.fixture
def gotsms_sandbox(timing: SandboxTiming) -> GotSmsSandbox:
    return GotSmsSandbox(timing=timing, seed=7)


@pytest.fixture
def getatext_sandbox(timing: SandboxTiming) -> GetatextSandbox:
    return GetatextSandbox(timing=timing, seed=7)

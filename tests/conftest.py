"""Shared fixtures: the anyio backend, sandbox providers with test timings, and a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from pydantic import SecretStr

from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger.postgres.migrations import migrate
from tests.postgres import fresh_database


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


@pytest.fixture
def database_url() -> Iterator[SecretStr]:
    """A new PostgreSQL database at this release's schema (skipped without SMSRENT_TEST_DATABASE_URL)."""
    with fresh_database() as url:
        anyio.run(migrate, url)
        yield url

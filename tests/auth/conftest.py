"""Fixtures for the credential tests: a client on each protocol era (`mode`)."""

from __future__ import annotations

import pytest

from tests.mcp import MODES


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode
